import pytest

from ansible_collections.pilito.priority_queue.plugins.module_utils import workers


@pytest.fixture(autouse=True)
def bound(monkeypatch):
    """The control queues bound on the broker: every worker of the fake's rounds, unless a test says."""
    monkeypatch.setattr(workers, "bound_nodes", lambda app: set(app.bound if app.bound is not None else app.rounds))


class Broadcasts:
    """A control app whose workers answer a ping only from the given round on."""

    def __init__(self, rounds, bound=None):
        self.rounds, self.asked, self.heard, self.bound = rounds, 0, [], bound
        self.control = self

    def broadcast(self, name, callback=None, **_):
        """As kombu collects: the callback sees each reply as it comes; what it raises ends the wait."""
        self.asked += 1
        replies = []
        for node, first in self.rounds.items():
            if self.asked >= first:
                self.heard.append(node)
                if callback:
                    callback({node: {"ok": "pong"}})
                replies.append({node: {"ok": "pong"}})
        return replies


def test_a_worker_that_misses_one_ping_is_still_found():
    app = Broadcasts({"general@b": 1, "fast@c": 2, "other@z": 1})
    assert workers.nodes_on_hosts(app, ["b", "c"], timeout=5, round_seconds=0.01) == ["fast@c", "general@b"]
    assert app.asked == 2


def test_a_host_without_a_worker_is_given_up_once_the_timeout_passed():
    app = Broadcasts({"general@b": 1})
    assert workers.nodes_on_hosts(app, ["b", "gone"], timeout=0.3, round_seconds=0.01) == ["general@b"]
    assert app.asked > 1


def test_the_ping_ends_once_every_host_answered():
    app = Broadcasts({"general@b": 1, "fast@c": 1, "late@z": 1})
    assert workers.nodes_on_hosts(app, ["b", "c"], timeout=5, round_seconds=10) == ["fast@c", "general@b"]
    assert app.heard == ["general@b", "fast@c"]  # not waiting for late@z


def test_a_broadcast_ends_once_every_bound_worker_answered():
    app = Broadcasts({"a@1": 1, "b@2": 1, "unbound@3": 1}, bound={"a@1", "b@2"})
    assert set(workers.ask(app, "ping", 10)) == {"a@1", "b@2"}
    assert app.heard == ["a@1", "b@2"]


def test_no_broadcast_when_no_worker_is_bound():
    app = Broadcasts({"a@1": 1}, bound=set())
    assert workers.ask(app, "ping", 10) == {} and app.asked == 0


def test_every_worker_bound_on_a_host_is_found_not_only_the_first_to_answer():
    app = Broadcasts({"celery_ai@b": 1, "celery_worker@b": 1, "other@z": 1})
    assert workers.nodes_on_hosts(app, ["b"], timeout=5, round_seconds=10) == ["celery_ai@b", "celery_worker@b"]
    assert app.asked == 1


class Clock:
    """time for workers: sleeping moves it on, nothing else does."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.now += seconds


def test_rounds_that_end_early_are_waited_out_so_the_broker_is_not_pinged_in_a_loop(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(workers, "time", clock)
    app = Broadcasts({"general@b": 1})
    original = app.broadcast

    def broadcast(*args, **kwargs):
        assert app.asked < 50, "pinged in a loop"
        return original(*args, **kwargs)

    app.broadcast = broadcast
    # every bound worker answers at once; host "gone" never does: one ping per 0.5 s round for 2 s
    assert workers.nodes_on_hosts(app, ["b", "gone"], timeout=2, round_seconds=0.5) == ["general@b"]
    assert app.asked == 4 and clock.now == 2
