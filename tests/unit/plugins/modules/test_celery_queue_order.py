"""celery_queue_order on fake workers that take probes from an in-memory Redis one fetch at a time, in
their own queue order: who is held, what counts as out of order, busy workers, check mode, and that
every probe is gone and every hold released afterwards."""

import pytest

from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import WAKE_KEY
from ansible_collections.pilito.priority_queue.plugins.modules import celery_queue_order
from ansible_collections.pilito.priority_queue.plugins.modules.celery_queue_order import in_order

from .conftest import FakeControlApp, FakeRedis, FakeWorker, assert_documented, broker_target

ORDER = ["high_priority", "default", "low_priority"]
POOLS = {"celery_ai": ["high_priority"], "celery_worker": ORDER}


@pytest.fixture
def order(run_module, bound_workers, monkeypatch):
    """order(workers, **args) -> (failed, result, app, redis): the module run on these fake workers."""
    def run(nodes, check=False, client=None, prefix="", **args):
        client = client if client is not None else FakeRedis()
        app = FakeControlApp(nodes, client, prefix)
        monkeypatch.setattr(celery_queue_order, "connect", lambda module: (broker_target(), client))
        monkeypatch.setattr(celery_queue_order, "control_app", lambda module, target: app)
        args.setdefault("pools", POOLS)
        failed, result = run_module(celery_queue_order, check=check, broker_key_prefix=prefix, **args)
        return failed, result, app, client
    return run


def released(app, nodes, client):
    """No probe left on the broker and no worker still held (a wake-up pushed with a probe may stay:
    the first worker to find nothing behind it removes it)."""
    return not queue_lists(client) and not any(worker.held for worker in nodes.values())


def queue_lists(client):
    """The broker's lists but the wake-ups."""
    return {key: values for key, values in client.lists.items() if not key.startswith(WAKE_KEY.format(queue=""))}


def test_only_the_pools_queues_count_in_order():
    assert in_order(["celery", "low_priority", "high_priority"], ORDER) == ["low_priority", "high_priority"]
    assert in_order([], ORDER) == []


def test_a_worker_taking_its_queues_in_order_passes_and_everything_is_released(order):
    nodes = {"celery_ai@a1": FakeWorker(["high_priority"]), "celery_worker@c1": FakeWorker(ORDER)}
    failed, result, app, client = order(nodes)
    assert not failed, result.get("msg")
    assert list(result["pools"]) == ["celery_worker"]  # one queue: nothing to order
    pool = result["pools"]["celery_worker"]
    assert pool["expected"] == ORDER
    assert pool["held"] == ["celery_ai@a1", "celery_worker@c1"]  # every consumer of a pool queue
    assert pool["workers"] == {"celery_worker@c1": dict(taken=ORDER, fetch_order=ORDER, checked_by="fetch")}
    assert nodes["celery_worker@c1"].taken == ORDER and nodes["celery_ai@a1"].taken == []
    assert released(app, nodes, client)
    assert app.sent("priority_queue_fetch", mode="resume") == [["celery_ai@a1", "celery_worker@c1"]]
    # Each probe went with a wake-up, so a worker waiting on its queue's wake-ups takes it.
    assert {key: len(values) for key, values in client.lists.items()} == {
        WAKE_KEY.format(queue=queue): 1 for queue in ORDER}
    assert result["changed"] is False


def test_probes_are_next_in_line_and_waiting_work_taken_between_them_does_not_change_the_order(order):
    client = FakeRedis(lists={queue: [f"real-{queue}"] for queue in ORDER})
    nodes = {"celery_worker@c1": FakeWorker(ORDER)}
    failed, result, app, client = order(nodes, client=client)
    assert not failed
    assert result["pools"]["celery_worker"]["workers"]["celery_worker@c1"]["taken"] == ORDER
    # each probe first, then the real message behind it, before the next queue's probe; the last waits on
    assert nodes["celery_worker@c1"].taken == ["high_priority", "high_priority", "default", "default", "low_priority"]
    assert queue_lists(client) == {"low_priority": ["real-low_priority"]}


def test_a_worker_out_of_order_is_named_with_what_it_took(order):
    nodes = {"celery_worker@c1": FakeWorker(["default", "high_priority", "low_priority"])}
    failed, result, app, client = order(nodes)
    assert failed
    assert result["problems"] == ["pool celery_worker: worker celery_worker@c1 took default, high_priority, low_priority; "
                                  "the topology's order is high_priority, default, low_priority"]
    assert result["msg"] == result["problems"][0]
    assert released(app, nodes, client)


def test_a_busy_worker_is_judged_by_its_report_with_a_warning_and_no_probe_sent(order):
    nodes = {"celery_worker@c1": FakeWorker(["celery"] + ORDER, can_fetch=False)}
    failed, result, app, client = order(nodes)
    assert not failed
    worker = result["pools"]["celery_worker"]["workers"]["celery_worker@c1"]
    assert worker == dict(taken=[], fetch_order=ORDER, checked_by="report")
    assert result["warnings"] == ["celery_worker@c1: its processes were busy, so its order is its own report "
                                  "(high_priority, default, low_priority), not a fetch"]
    assert [command for command in client.commands if command[0] == "rpush"] == []


def test_a_busy_worker_reporting_another_order_fails(order):
    nodes = {"celery_worker@c1": FakeWorker(["low_priority", "default", "high_priority"], can_fetch=False)}
    failed, result, _app, _client = order(nodes)
    assert failed
    assert result["problems"] == ["pool celery_worker: worker celery_worker@c1 asks for low_priority, default, "
                                  "high_priority; the topology's order is high_priority, default, low_priority"]


def test_a_worker_that_never_reaches_a_probe_is_judged_by_its_report_and_the_probes_are_removed(order):
    nodes = {"celery_worker@c1": FakeWorker(["high_priority", "default"])}  # not on low_priority
    failed, result, app, client = order(nodes, fetch_timeout=0.3)
    assert failed
    worker = result["pools"]["celery_worker"]["workers"]["celery_worker@c1"]
    assert (worker["taken"], worker["checked_by"]) == (["high_priority", "default"], "report")
    assert "not yet every probe" in result["warnings"][0]
    assert result["problems"] == ["pool celery_worker: worker celery_worker@c1 asks for high_priority, default; "
                                  "the topology's order is high_priority, default, low_priority"]
    assert released(app, nodes, client)


def test_probes_taken_at_once_mean_a_consumer_that_was_not_held(order):
    nodes = {"celery_worker@c1": FakeWorker(ORDER, per_fetch=3)}
    failed, result, app, client = order(nodes)
    assert failed
    assert result["problems"] == ["pool celery_worker: probes on default, high_priority, low_priority went at once while "
                                  "only celery_worker@c1 could fetch: a worker that was not held consumes these queues"]
    assert released(app, nodes, client)


def test_a_pool_without_a_worker_is_a_problem(order):
    failed, result, app, _client = order({"celery_ai@a1": FakeWorker(["high_priority"])})
    assert failed
    assert result["problems"] == ["pool celery_worker: no worker named celery_worker@... answered"]
    assert app.sent("priority_queue_fetch") == []


def test_a_worker_without_the_control_command_is_named(order):
    nodes = {"celery_worker@c1": FakeWorker(ORDER, control=False)}
    failed, result, _app, client = order(nodes)
    assert failed
    assert result["problems"] == [
        "pool celery_worker: celery_worker@c1 does not know the control command priority_queue_fetch: it has not "
        "loaded the rendered config module celery_priority (check the app's opt-in line and the worker's PYTHONPATH)"]
    assert result["pools"]["celery_worker"] == dict(expected=ORDER)
    assert queue_lists(client) == {}


def test_a_failed_resume_is_reported_with_when_the_hold_runs_out(order):
    nodes = {"celery_worker@c1": FakeWorker(ORDER, errors={"priority_queue_fetch:resume": "lost"})}
    failed, result, _app, client = order(nodes, hold_seconds=4)
    assert failed
    assert result["problems"] == ["pool celery_worker: resuming the held workers failed (celery_worker@c1 answered "
                                  "priority_queue_fetch with: lost); they resume by themselves within 4.0 s"]
    assert queue_lists(client) == {}


def test_the_key_prefix_is_where_probes_go(order):
    nodes = {"celery_worker@c1": FakeWorker(ORDER)}
    failed, _result, app, client = order(nodes, prefix="pq:")
    assert not failed
    assert sorted(key for command, key in client.commands) == sorted(
        ["pq:" + queue for queue in ORDER for _command in ("rpush", "lrem")])


def test_check_mode_holds_no_worker_and_sends_no_probe(order):
    nodes = {"celery_worker@c1": FakeWorker(ORDER)}
    failed, result, app, client = order(nodes, check=True)
    assert not failed
    assert result["msg"] == "check mode: no worker held, no probe sent"
    assert [name for name, _destination, _arguments in app.broadcasts] == ["active_queues"]
    assert client.commands == [] and result["pools"] == {}


@pytest.mark.parametrize("args, message", [
    (dict(control_timeout=0), "control_timeout must be a positive number of seconds, got 0.0"),
    (dict(fetch_timeout=-1), "fetch_timeout must be a positive number of seconds, got -1.0"),
    (dict(hold_seconds=0), "hold_seconds must be a positive number of seconds, got 0.0"),
    (dict(pools={"celery_worker": "high_priority"}), "pools.celery_worker must be a non-empty list of queue names, "
                                                     "got 'high_priority'"),
    (dict(pools={"celery_worker": []}), "pools.celery_worker must be a non-empty list of queue names, got []"),
    (dict(pools={"celery_worker": ["high", ""]}), "pools.celery_worker must be a non-empty list of queue names, "
                                                  "got ['high', '']"),
    (dict(pools={"celery_worker": ["high", "low", "high"]}), "pools.celery_worker names a queue twice: "
                                                             "['high', 'low', 'high']"),
])
def test_bad_options_fail_naming_the_option_before_any_worker_is_asked(order, args, message):
    failed, result, app, client = order({"celery_worker@c1": FakeWorker(ORDER)}, **args)
    assert failed
    assert result["msg"] == message
    assert app.broadcasts == [] and client.commands == []


def test_documentation_matches_the_argument_spec(monkeypatch):
    assert_documented(celery_queue_order, monkeypatch)
