"""celery_queue_move against a real Redis, with real Celery messages."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from base64 import b64decode

import pytest
from celery import Celery

from conftest import ROOT, run_module

SEP = "\x06\x16"


@pytest.fixture
def producer(redis_server, redis_client):
    app = Celery("producer", broker=redis_server.url())
    yield app
    app.close()


def send(app, queue, numbers, priority=None):
    for n in numbers:
        app.send_task("crawler.tasks.crawl_website_task", args=[n], queue=queue, priority=priority)


def drain(client, key):
    """Messages in the order a worker would take them (kombu BRPOPs the right end)."""
    numbers = []
    while (raw := client.rpop(key)) is not None:
        body = json.loads(b64decode(json.loads(raw)["body"]))
        numbers.append(body[0][0])
    return numbers


def test_moves_everything_in_order_keeping_priority_then_nothing(redis_server, redis_client, producer):
    send(producer, "celery", [100, 101])
    send(producer, "low_priority", range(5))
    send(producer, "low_priority", [50, 51, 52], priority=6)
    args = dict(broker_url=redis_server.url(), source="low_priority", destination="celery")
    first = run_module("celery_queue_move", args)
    assert first["changed"] is True, first
    assert first["moved"] == 8
    assert first["moved_by_priority"] == {"0": 5, "3": 0, "6": 3, "9": 0}
    assert first["source_length"] == {"before": 8, "after": 0}
    assert first["destination_length"] == {"before": 2, "after": 10}
    second = run_module("celery_queue_move", args)
    assert second["changed"] is False and second["moved"] == 0
    assert drain(redis_client, "celery") == [100, 101, 0, 1, 2, 3, 4]
    assert drain(redis_client, "celery" + SEP + "6") == [50, 51, 52]
    assert redis_client.llen("low_priority") == 0


def test_check_mode_counts_and_moves_nothing(redis_server, redis_client, producer):
    send(producer, "default", range(6))
    result = run_module("celery_queue_move", dict(
        broker_url=redis_server.url(), source="default", destination="celery"), check=True, diff=True)
    assert result["changed"] is True
    assert result["moved"] == 6
    assert result["diff"]["after"] == "default: 0\ncelery: 6\n"
    assert redis_client.llen("default") == 6
    assert redis_client.llen("celery") == 0


def test_limit_moves_highest_priority_first(redis_server, redis_client, producer):
    send(producer, "low_priority", [60, 61], priority=6)
    send(producer, "low_priority", range(3))
    result = run_module("celery_queue_move", dict(
        broker_url=redis_server.url(), source="low_priority", destination="celery", limit=4))
    assert result["moved"] == 4
    assert result["moved_by_priority"] == {"0": 3, "3": 0, "6": 1, "9": 0}
    assert drain(redis_client, "celery") == [0, 1, 2]
    assert drain(redis_client, "celery" + SEP + "6") == [60]
    assert drain(redis_client, "low_priority" + SEP + "6") == [61]


def test_same_source_and_destination_is_refused(redis_server):
    result = run_module("celery_queue_move", dict(broker_url=redis_server.url(), source="celery", destination="celery"))
    assert result["failed"] is True
    assert "same queue" in result["msg"]


def test_killed_mid_move_loses_and_duplicates_nothing(redis_server, redis_client):
    total = 300_000
    pipe = redis_client.pipeline(transaction=False)
    for start in range(0, total, 10_000):
        pipe.lpush("low_priority", *(f"message-{n}" for n in range(start, start + 10_000)))
    pipe.execute()
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [{
        "pilito.priority_queue.celery_queue_move": {
            "broker_url": redis_server.url(), "source": "low_priority", "destination": "celery", "batch_size": 50}}]}]
    with tempfile.TemporaryDirectory() as tmp:
        playbook = os.path.join(tmp, "play.yml")
        with open(playbook, "w") as handle:
            json.dump(play, handle)
        proc = subprocess.Popen(
            ["ansible-playbook", "-i", "localhost,", "-c", "local", playbook,
             "-e", f"ansible_python_interpreter={sys.executable}"],
            env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "build/collections")},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while redis_client.llen("celery") < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        # The module runs in a process of its own (AnsiballZ); kill it, not only the playbook.
        subprocess.run(["pkill", "-KILL", "-f", "AnsiballZ_celery_queue_move"], check=False)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)
    snapshot = redis_client.pipeline(transaction=True)
    snapshot.lrange("low_priority", 0, -1).lrange("celery", 0, -1)
    source_items, moved_items = snapshot.execute()
    assert redis_client.llen("celery") == len(moved_items), "the module was still running after the kill"
    left, moved = len(source_items), len(moved_items)
    assert moved >= 1000 and left > 0, "the move was not interrupted midway; make the list longer"
    items = source_items + moved_items
    assert len(items) == total
    assert len(set(items)) == total
    finish = run_module("celery_queue_move", dict(broker_url=redis_server.url(), source="low_priority",
                                                  destination="celery"))
    assert finish["moved"] == left
    assert redis_client.llen("celery") == total
    # oldest first: the message pushed first is still the next one a worker takes
    assert redis_client.lindex("celery", -1) == b"message-0"


def test_moved_messages_are_readdressed_and_return_to_the_destination(redis_server, redis_client, producer):
    """A worker that dies holding a moved message must give it back to the destination, not the old queue."""
    from kombu import Connection, Exchange, Queue

    send(producer, "low_priority", range(3))
    run_module("celery_queue_move", dict(broker_url=redis_server.url(), source="low_priority", destination="celery"))
    for raw in redis_client.lrange("celery", 0, -1):
        info = json.loads(raw)["properties"]["delivery_info"]
        assert (info["exchange"], info["routing_key"]) == ("", "celery")
    with Connection(redis_server.url()) as connection:
        queue = connection.SimpleQueue(Queue("celery", Exchange("celery"), routing_key="celery"))
        taken = queue.get(timeout=5)
        assert taken.decode()[0] == [0]
        assert redis_client.hlen("unacked") == 1
        queue.close()  # without acknowledging: kombu restores what the consumer held
    assert redis_client.hlen("unacked") == 0
    assert redis_client.llen("low_priority") == 0
    assert sorted(json.loads(b64decode(json.loads(raw)["body"]))[0][0]
                  for raw in redis_client.lrange("celery", 0, -1)) == [0, 1, 2]


def test_reserved_messages_of_a_gone_worker_move_with_include_unacked(redis_server, redis_client, producer):
    """A worker killed holding messages leaves them in the unacked hash, addressed to the old queue."""
    from kombu import Connection, Exchange, Queue

    send(producer, "low_priority", range(3))
    send(producer, "celery", [7])
    connection = Connection(redis_server.url())
    low = connection.SimpleQueue(Queue("low_priority", Exchange("low_priority"), routing_key="low_priority"))
    other = connection.SimpleQueue(Queue("celery", Exchange("celery"), routing_key="celery"))
    assert [low.get(timeout=5).decode()[0][0], other.get(timeout=5).decode()[0][0]] == [0, 7]
    routing_keys = [json.loads(raw)[2] for raw in redis_client.hvals("unacked")]
    held = routing_keys.count("low_priority")
    assert held >= 1 and routing_keys.count("celery") >= 1
    waiting_low = redis_client.llen("low_priority")
    assert held + waiting_low == 3
    # the worker "dies": its channel goes without giving back what it holds
    connection.default_channel.do_restore = False
    connection.release()
    args = dict(broker_url=redis_server.url(), source="low_priority", destination="default", include_unacked=True)
    checked = run_module("celery_queue_move", args, check=True)
    assert checked["moved"] == 3 and checked["moved_unacked"] == held
    assert redis_client.hlen("unacked") == len(routing_keys)
    result = run_module("celery_queue_move", args)
    assert result["moved"] == 3 and result["moved_unacked"] == held, result
    left = [json.loads(raw)[2] for raw in redis_client.hvals("unacked")]
    assert left == ["celery"] * routing_keys.count("celery"), "only entries routed to the source move"
    assert redis_client.zcard("unacked_index") == len(left)
    order = [json.loads(raw) for raw in reversed(redis_client.lrange("default", 0, -1))]
    assert sorted(json.loads(b64decode(m["body"]))[0][0] for m in order) == [0, 1, 2]
    assert json.loads(b64decode(order[0]["body"]))[0][0] in range(held), "a reserved one is taken first"
    assert {m["properties"]["delivery_info"]["routing_key"] for m in order} == {"default"}
    assert order[0]["headers"]["redelivered"] is True
    assert run_module("celery_queue_move", args)["changed"] is False
