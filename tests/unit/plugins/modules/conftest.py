"""What the broker and worker module tests share: a whole-module run whose exit and failure are
caught, an in-memory Redis with the commands the modules send, the argument spec a module builds,
and a fake Celery app whose workers answer remote control as the real ones do."""

import pytest
import yaml

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pilito.priority_queue.plugins.doc_fragments import broker as broker_fragment
from ansible_collections.pilito.priority_queue.plugins.module_utils import workers
from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import parse_broker_url

BROKER_URL = "redis://:s3cret-Pa55@broker:6379/0"
SECRET = "s3cret-Pa55"


class ModuleExit(Exception):
    def __init__(self, result):
        super().__init__(result)
        self.result = result


class ModuleFail(ModuleExit):
    pass


class SpecCaught(Exception):
    pass


@pytest.fixture
def run_module(monkeypatch):
    """run_module(module, **args) -> (failed, result): main() run with these options, the warnings
    it gave under result["warnings"]."""
    warnings = []

    def exit_json(self, **result):
        raise ModuleExit(dict(result, warnings=list(warnings)))

    def fail_json(self, msg, **result):
        raise ModuleFail(dict(result, msg=msg, failed=True, warnings=list(warnings)))

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, warning: warnings.append(warning))

    def run(module, check=False, **args):
        warnings.clear()
        args.setdefault("broker_url", BROKER_URL)
        with patch_module_args(dict(args, _ansible_check_mode=check)):
            with pytest.raises(ModuleExit) as raised:
                module.main()
        return isinstance(raised.value, ModuleFail), raised.value.result

    return run


def argument_spec_of(module, monkeypatch):
    """The argument spec main() hands AnsibleModule, caught before anything runs."""
    caught = {}

    def init(self, argument_spec, **kwargs):
        caught.update(argument_spec)
        raise SpecCaught()

    monkeypatch.setattr(basic.AnsibleModule, "__init__", init)
    with pytest.raises(SpecCaught):
        module.main()
    return caught


def assert_documented(module, monkeypatch):
    """Every option in the argument spec is documented with its type, default and required flag, and
    nothing else is (the broker options come from the doc fragment)."""
    docs = yaml.safe_load(module.DOCUMENTATION)["options"]
    docs.update(yaml.safe_load(broker_fragment.ModuleDocFragment.DOCUMENTATION)["options"])
    spec = argument_spec_of(module, monkeypatch)
    assert sorted(docs) == sorted(spec)
    for name, option in spec.items():
        assert docs[name]["type"] == option["type"], name
        assert docs[name].get("default") == option.get("default"), name
        assert docs[name].get("required", False) == option.get("required", False), name
        assert docs[name].get("choices") == option.get("choices"), name
        if option["type"] == "list":
            assert docs[name].get("elements") == option.get("elements"), name


class FakePipeline:
    def __init__(self, client):
        self.client = client
        self.calls = []

    def __getattr__(self, name):
        def queued(*args):
            self.calls.append((name, args))
            return self
        return queued

    def execute(self):
        calls, self.calls = self.calls, []
        return [getattr(self.client, name)(*args) for name, args in calls]

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.calls = []


class FakeRedis:
    """Lists, hashes and sets in memory, with the commands the modules use. Values are returned as
    stored; a real client returns bytes, which the modules read the same."""

    def __init__(self, lists=None, hashes=None, sets=None):
        self.lists = {key: list(values) for key, values in (lists or {}).items()}
        self.hashes = {key: dict(values) for key, values in (hashes or {}).items()}
        self.sets = {key: set(values) for key, values in (sets or {}).items()}
        self.commands = []

    def pipeline(self, transaction=True):
        return FakePipeline(self)

    def _log(self, *command):
        self.commands.append(command)

    def llen(self, key):
        return len(self.lists.get(key, []))

    def lindex(self, key, index):
        values = self.lists.get(key, [])
        return values[index] if -len(values) <= index < len(values) else None

    def rpush(self, key, *values):
        self._log("rpush", key)
        self.lists.setdefault(key, []).extend(values)
        return len(self.lists[key])

    def lpush(self, key, *values):
        self._log("lpush", key)
        self.lists.setdefault(key, [])[:0] = reversed(values)
        return len(self.lists[key])

    def ltrim(self, key, start, end):
        values = self.lists.get(key, [])
        self.lists[key] = values[start:None if end == -1 else end + 1]
        return True

    def rpop(self, key):
        values = self.lists.get(key)
        if not values:
            return None
        value = values.pop()
        if not values:
            del self.lists[key]
        return value

    def lpos(self, key, value):
        values = self.lists.get(key, [])
        return values.index(value) if value in values else None

    def lrem(self, key, count, value):
        self._log("lrem", key)
        values = self.lists.get(key, [])
        if value in values:
            values.remove(value)
            if not values:
                del self.lists[key]
            return 1
        return 0

    def exists(self, key):
        return int(key in self.lists or key in self.hashes or key in self.sets)

    def hlen(self, key):
        return len(self.hashes.get(key, {}))

    def hscan_iter(self, key, count=None):
        return iter(list(self.hashes.get(key, {}).items()))


class FakeWorker:
    """One worker as remote control sees it: the queues it consumes (in its fetch order), whether it
    has the rendered config's control command, and its fetches, taken from a FakeRedis."""

    def __init__(self, queues, control=True, can_fetch=True, in_flight=0, per_fetch=1, answers=True, bound=True,
                 errors=None):
        self.queues = list(queues)
        self.control = control
        self.can_fetch = can_fetch
        self.in_flight = in_flight  # status answers with a fetch in flight this many more times
        self.per_fetch = per_fetch  # messages one allowed fetch takes
        self.answers = answers
        self.bound = bound  # its control queue is bound (a killed worker's stays bound, silent)
        self.errors = errors or {}  # "command" or "command:mode" -> the error it answers with
        self.held = False
        self.taken = []

    def fetch(self, redis, prefix):
        for _fetch in range(self.per_fetch):
            for queue in self.queues:
                message = redis.rpop(prefix + queue) if redis else None
                if message is not None:
                    self.taken.append(queue)
                    break

    def reply(self, name, arguments, redis, prefix):
        for key in (name, f"{name}:{arguments.get('mode')}"):
            if key in self.errors:
                return {"error": self.errors[key]}
        if name == "ping":
            return {"ok": "pong"}
        if name == "active_queues":
            return [{"name": queue, "exchange": {"name": queue}, "routing_key": queue} for queue in self.queues]
        if name == "cancel_consumer":
            if arguments["queue"] in self.queues:
                self.queues.remove(arguments["queue"])
            return {"ok": f"no longer consuming from {arguments['queue']}"}
        if name == "add_consumer":
            if arguments["queue"] not in self.queues:
                self.queues.append(arguments["queue"])
            return {"ok": f"add consumer {arguments['queue']}"}
        if name == "priority_queue_fetch" and self.control:
            mode = arguments.get("mode", "status")
            if mode == "hold":
                self.held = True
            elif mode == "resume":
                self.held = False
            elif mode == "once":
                self.fetch(redis, prefix)
            in_flight = self.in_flight > 0
            self.in_flight = max(0, self.in_flight - 1)
            return dict(ok=mode, held=self.held, once_pending=False, in_flight=in_flight, can_fetch=self.can_fetch,
                        fetch_order=list(self.queues))
        return {"error": f"No such control command: {name}"}


class FakeControlApp:
    """A Celery app whose control.broadcast is answered by FakeWorkers, reply by reply through the
    callback, as kombu collects them. Every broadcast is recorded as (command, destination, arguments)."""

    def __init__(self, nodes, redis=None, prefix=""):
        self.nodes = nodes
        self.redis = redis
        self.prefix = prefix
        self.broadcasts = []
        self.control = self

    def broadcast(self, name, arguments=None, destination=None, callback=None, **_):
        arguments = arguments or {}
        self.broadcasts.append((name, destination, dict(arguments)))
        for node in sorted(self.nodes) if destination is None else destination:
            worker = self.nodes.get(node)
            if worker is not None and worker.answers:
                callback({node: worker.reply(name, arguments, self.redis, self.prefix)})

    def sent(self, name, **arguments):
        """The destinations of each broadcast of this command with these arguments."""
        return [destination for command, destination, sent in self.broadcasts
                if command == name and all(sent.get(key) == value for key, value in arguments.items())]


@pytest.fixture
def bound_workers(monkeypatch):
    """The control queues bound on the broker: bound_nodes reads the fake app's workers."""
    monkeypatch.setattr(workers, "bound_nodes", lambda app: {node for node, worker in app.nodes.items() if worker.bound})


def broker_target():
    return parse_broker_url(BROKER_URL)
