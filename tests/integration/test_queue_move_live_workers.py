"""celery_queue_move with include_unacked never moves what a live worker holds, wherever it runs:
workers on two hosts hold messages of the source beside a dead worker's; only the dead worker's
message moves, and every task runs exactly once."""

import json
import time

from conftest import run_module, wait_until
# readable_tmp and workers are fixtures, used by name.
from worker_harness import (  # noqa: F401 # pylint: disable=unused-import
    control_app,
    readable_tmp,
    task_message,
    workers,
)


def leave_reserved_by_a_dead_worker(client, message):
    """The unacked entry a worker killed holding the message leaves behind (kombu's format)."""
    tag = json.loads(message)["properties"]["delivery_tag"]
    client.hset("unacked", tag, json.dumps([json.loads(message), "legacy", "legacy"]))
    client.zadd("unacked_index", {tag: time.time()})


def test_only_the_reserved_messages_of_gone_workers_move(redis_server, redis_client, workers):
    for node in ("a@host-a", "b@host-b"):
        workers(node, ["legacy"], 1, concurrency=1)
    workers("c@host-c", ["default"], 1, concurrency=1)
    for tag in ("held-a", "held-b"):
        redis_client.lpush("legacy", task_message("legacy", "orderapp.hold", [tag, 20]))
    wait_until(lambda: redis_client.llen("legacy") == 0 and redis_client.hlen("unacked") == 2,
               "each live worker holding a message of legacy", timeout=30)
    leave_reserved_by_a_dead_worker(redis_client, task_message("legacy", "orderapp.hold", ["dead", 0]))
    args = dict(broker_url=redis_server.url(), source="legacy", destination="default", include_unacked=True)

    # Both live workers still consume the source: nothing reserved moves, not even the dead one's.
    result = run_module("celery_queue_move", args)
    assert (result["moved_unacked"], result["kept_unacked"]) == (0, 3), result
    assert "live workers consume legacy (a@host-a, b@host-b)" in " ".join(result["warnings"])
    assert redis_client.hlen("unacked") == 3

    # They stop consuming it but still run what they hold: only the dead worker's message moves.
    app = control_app(redis_server)
    replies = app.control.cancel_consumer("legacy", destination=["a@host-a", "b@host-b"], reply=True, timeout=5)
    assert len(replies) == 2, replies
    result = run_module("celery_queue_move", args)
    assert (result["moved_unacked"], result["kept_unacked"]) == (1, 2), result
    assert "live workers hold them" in " ".join(result["warnings"])

    wait_until(lambda: redis_client.llen("started") == 3, "the three tasks run", timeout=60)
    time.sleep(2)  # a duplicate would run right after
    assert sorted(item.decode() for item in redis_client.lrange("started", 0, -1)) == ["dead", "held-a", "held-b"]
    assert redis_client.hlen("unacked") == 0
