"""A worker that has just finished a task fetches the next at once: on kombu before 5.3.0 (the demo
image's 5.2.4) the event loop starts the next fetch (its tick) before it acknowledges the finished
task (a ready callback), then waits for its next timer, seconds away; with prefetch 1 and late
acks, as the topology sets them, every task but the first waited that long (celery issue #7718,
kombu pull request #1587). The rendered config carries kombu 5.3.0's fix where it is missing.
How much faster a worker goes through its queue: benchmarks/fetch_after_ack_bench.py."""

import json

import pytest

from conftest import docker
# readable_tmp is a fixture, used by name.
from worker_harness import app_dir, readable_tmp  # noqa: F401 # pylint: disable=unused-import

# One turn of kombu's own event loop, as a worker runs it: a ready callback acknowledges a finished
# task, a timer is due soon, and nothing is readable, so the loop then waits.
ONE_TURN = """
import json, os
import celery_priority  # the rendered config: its backports apply on import
from kombu.asynchronous import Hub

calls = []
hub = Hub()
poll = hub.poller.poll
hub.poller.poll = lambda timeout: calls.append("wait") or poll(timeout)
read_end, _write_end = os.pipe()
hub.add_reader(read_end, lambda: None)
hub.on_tick.add(lambda: calls.append("tick"))
hub.call_soon(lambda: calls.append("ack"))
hub.call_later(0.05, lambda: None)
next(hub.loop)
print(json.dumps({"backported": celery_priority.TICK_AFTER_TIMERS_BACKPORTED, "calls": calls}))
"""


@pytest.mark.parametrize("tick_backport", [True, False], ids=["with the fix", "without it"])
def test_the_loop_starts_the_next_fetch_after_the_ack_before_it_waits(demo_images, readable_tmp, tick_backport):
    directory = readable_tmp / "loop"
    directory.mkdir(mode=0o755)
    app_dir(directory, tick_backport=tick_backport)
    out = docker("run", "--rm", "-v", f"{directory}:/orderapp:ro", "-e", "PYTHONPATH=/orderapp",
                 demo_images["APP_IMAGE"], "python3", "-c", ONE_TURN)
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["backported"] is tick_backport
    calls = seen["calls"]
    after_ack = calls[calls.index("ack"):calls.index("wait")]
    if tick_backport:
        assert "tick" in after_ack, calls
    else:  # kombu 5.2.4's own order: the bug is there to be fixed
        assert "tick" not in after_ack, calls
