from ansible_collections.pilito.priority_queue.plugins.module_utils import workers


class Broadcasts:
    """A control app whose workers answer a ping only from the given round on."""

    def __init__(self, rounds):
        self.rounds, self.asked = rounds, 0
        self.control = self

    def broadcast(self, name, **_):
        self.asked += 1
        return [{node: {"ok": "pong"}} for node, first in self.rounds.items() if self.asked >= first]


def test_a_worker_that_misses_one_ping_is_still_found():
    app = Broadcasts({"general@b": 1, "fast@c": 2, "other@z": 1})
    assert workers.nodes_on_hosts(app, ["b", "c"], timeout=5, round_seconds=0.01) == ["fast@c", "general@b"]
    assert app.asked == 2


def test_a_host_without_a_worker_is_given_up_once_the_timeout_passed():
    app = Broadcasts({"general@b": 1})
    assert workers.nodes_on_hosts(app, ["b", "gone"], timeout=0.3, round_seconds=0.01) == ["general@b"]
    assert app.asked > 1
