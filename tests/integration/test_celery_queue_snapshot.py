"""celery_queue_snapshot against a real Redis that loses everything when it restarts."""

import json
import os
import stat

import pytest
from celery import Celery

from conftest import docker, redis_container, run_module, wait_until

SEP = "\x06\x16"
QUEUES = ["high_priority", "default", "low_priority"]


@pytest.fixture
def producer(redis_server, redis_client):
    app = Celery("producer", broker=redis_server.url())
    yield app
    app.close()


def fill(app, client):
    for n in range(5):
        app.send_task("chat.tasks.generate_ai_reply", args=[f"secret-{n}", 0], queue="high_priority")
    for n in range(7):
        app.send_task("crawler.tasks.process_page_content", args=[n], queue="low_priority", priority=6)
    app.send_task("crawler.tasks.process_page_content", args=[99], queue="low_priority")
    # one message a worker reserved and did not acknowledge, as kombu keeps it
    client.hset("unacked", "tag-1", json.dumps([{"body": "e30="}, "", "default"]))
    client.zadd("unacked_index", {"tag-1": 1700000000.5})


def content(client):
    keys = ["high_priority", "low_priority", "low_priority" + SEP + "6"]
    return ({key: client.lrange(key, 0, -1) for key in keys}, client.hgetall("unacked"),
            client.zrange("unacked_index", 0, -1, withscores=True))


@pytest.fixture
def own_redis(demo_images):
    """A broker of this test's own, since the test restarts it."""
    with redis_container(demo_images["REDIS_IMAGE"]) as server:
        yield server


def restart_broker(server):
    """The broker comes back empty (no persistence), perhaps on another published port."""
    docker("restart", "-t", "1", server.container)
    server.port = int(docker("port", server.container, "6379").splitlines()[0].rsplit(":", 1)[1])
    wait_until(lambda: server.client().ping(), "redis after restart")


def test_save_restart_restore_keeps_every_message_in_order(own_redis, tmp_path):
    redis_server, redis_client = own_redis, own_redis.client()
    app = Celery("producer", broker=redis_server.url())
    fill(app, redis_client)
    app.close()
    before = content(redis_client)
    path = str(tmp_path / "snapshot.json")
    args = dict(broker_url=redis_server.url(), path=path)

    saved = run_module("celery_queue_snapshot", dict(args, state="saved", queues=QUEUES))
    assert saved["changed"] is True, saved
    assert saved["messages"] == 14
    assert saved["queues"] == {"high_priority": 5, "default": 0, "low_priority": 8}
    assert saved["reserved"] == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "secret-" not in saved["_raw_output"]
    again = run_module("celery_queue_snapshot", dict(args, state="saved", queues=QUEUES))
    assert again["changed"] is False

    restart_broker(redis_server)
    client = redis_server.client()
    assert client.dbsize() == 0, "this broker was meant to keep nothing across a restart"
    args["broker_url"] = redis_server.url()

    checked = run_module("celery_queue_snapshot", dict(args, state="restored"), check=True)
    assert checked["changed"] is True and client.dbsize() == 0
    restored = run_module("celery_queue_snapshot", dict(args, state="restored"))
    assert restored["changed"] is True, restored
    assert restored["messages"] == 14
    assert content(client) == before
    twice = run_module("celery_queue_snapshot", dict(args, state="restored"))
    assert twice["changed"] is False and twice["restored_keys"] == []
    assert content(client) == before


def test_restore_keeps_messages_sent_since_beside_the_saved_ones(redis_server, redis_client, producer, tmp_path):
    """A producer outside the stack kept sending while the broker lost part of its data: every saved
    message comes back once, behind the ones sent since (lists are consumed from their tail)."""
    redis_client.flushdb()
    fill(producer, redis_client)
    before = content(redis_client)
    path = str(tmp_path / "snapshot.json")
    run_module("celery_queue_snapshot", dict(broker_url=redis_server.url(), path=path, state="saved", queues=QUEUES))
    redis_client.delete("high_priority", "unacked", "unacked_index")
    redis_client.lpush("low_priority", "a message sent after the snapshot")
    result = run_module("celery_queue_snapshot", dict(broker_url=redis_server.url(), path=path, state="restored"))
    assert result["changed"] is True, result
    assert (result["put_back"], result["kept"], result["beside"]) == (6, 8, 1), result
    lists, unacked, index = content(redis_client)
    assert lists["high_priority"] == before[0]["high_priority"]
    assert lists["low_priority"] == [b"a message sent after the snapshot"] + before[0]["low_priority"]
    assert lists["low_priority" + SEP + "6"] == before[0]["low_priority" + SEP + "6"]
    assert (unacked, index) == before[1:]
    again = run_module("celery_queue_snapshot", dict(broker_url=redis_server.url(), path=path, state="restored"))
    assert again["changed"] is False and (again["put_back"], again["beside"]) == (0, 1), again


def test_missing_snapshot_and_missing_queues_are_clear_errors(redis_server, tmp_path):
    missing = run_module("celery_queue_snapshot", dict(
        broker_url=redis_server.url(), path=str(tmp_path / "none.json"), state="restored"))
    assert missing["failed"] is True and "no snapshot at" in missing["msg"]
    no_queues = run_module("celery_queue_snapshot", dict(
        broker_url=redis_server.url(), path=str(tmp_path / "s.json"), state="saved"))
    assert no_queues["failed"] is True and "queues" in no_queues["msg"]
