"""celery_queue_length against a real Redis, filled by a real Celery producer."""

import pytest
from celery import Celery
from kombu import Connection

from conftest import run_module, start, wait_until


@pytest.fixture
def producer(redis_server, redis_client):
    app = Celery("producer", broker=redis_server.url())
    app.conf.broker_connection_retry_on_startup = False
    yield app
    app.close()


def send(app, queue, count, priority=None):
    for n in range(count):
        app.send_task("crawler.tasks.crawl_website_task", args=[n], queue=queue, priority=priority)


def test_counts_every_priority_level_and_reserved_messages(redis_server, producer):
    send(producer, "low_priority", 5)
    send(producer, "low_priority", 3, priority=6)
    send(producer, "high_priority", 2)
    with Connection(redis_server.url()) as conn:
        reserved = conn.default_channel.basic_get("high_priority", no_ack=False)
        assert reserved is not None  # now in the unacked hash, not in the list
        result = run_module("celery_queue_length", dict(
            broker_url=redis_server.url(), queues=["high_priority", "low_priority", "default"]))
    assert not result.get("failed"), result["msg"] if "msg" in result else result
    assert result["changed"] is False
    low, high = result["queues"]["low_priority"], result["queues"]["high_priority"]
    # This producer does not load the rendered config, which stamps the send time: the age is unknown.
    assert low == dict(total=8, waiting=8, by_priority={"0": 5, "3": 0, "6": 3, "9": 0}, unacked=0, known=True,
                       oldest_age_seconds=None)
    assert (high["waiting"], high["unacked"], high["total"]) == (1, 1, 2)
    assert result["total"] == 10
    assert result["exceeded"] == []


def test_unknown_queue_is_zero_with_a_warning(redis_server, redis_client):
    result = run_module("celery_queue_length", dict(broker_url=redis_server.url(), queues=["no_such_queue"]))
    assert result["queues"]["no_such_queue"]["total"] == 0
    assert result["queues"]["no_such_queue"]["known"] is False
    assert any("no_such_queue" in warning and "check the name" in warning for warning in result["warnings"])


def test_threshold_fails_naming_queue_length_and_threshold(redis_server, producer):
    send(producer, "high_priority", 4)
    result = run_module("celery_queue_length", dict(
        broker_url=redis_server.url(), queues=["high_priority"], thresholds={"high_priority": 3}))
    assert result["failed"] is True
    assert result["msg"] == "queue high_priority holds 4 messages, above its threshold of 3"
    assert result["queues"]["high_priority"]["total"] == 4
    within = run_module("celery_queue_length", dict(
        broker_url=redis_server.url(), queues=["high_priority"], thresholds={"high_priority": 4}))
    assert not within.get("failed")


def test_check_mode_reads_the_same_and_changes_nothing(redis_server, producer, redis_client):
    send(producer, "default", 3)
    before = {key: redis_client.type(key) for key in redis_client.keys()}
    result = run_module("celery_queue_length", dict(broker_url=redis_server.url(), queues=["default"]), check=True)
    assert result["queues"]["default"]["total"] == 3
    assert result["changed"] is False
    assert {key: redis_client.type(key) for key in redis_client.keys()} == before
    assert redis_client.llen("default") == 3


def test_threshold_for_a_queue_not_measured_is_rejected(redis_server):
    result = run_module("celery_queue_length", dict(
        broker_url=redis_server.url(), queues=["default"], thresholds={"defualt": 5}))
    assert result["failed"] is True
    assert "thresholds names queue 'defualt'" in result["msg"]


@pytest.fixture(scope="module")
def password_redis(demo_images):
    name, port = start(demo_images["REDIS_IMAGE"], 6379, "redis-server", "--bind", "0.0.0.0",
                       "--requirepass", "right-horse-battery")
    import subprocess

    import redis

    try:
        wait_until(lambda: redis.Redis(port=port, password="right-horse-battery").ping(), "redis with password")
        yield port
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_wrong_password_is_named_and_never_shown(password_redis):
    url = f"redis://:wrong-staple-secret@127.0.0.1:{password_redis}/0"
    result = run_module("celery_queue_length", dict(broker_url=url, queues=["default"]))
    assert result["failed"] is True
    assert "rejected the credentials" in result["msg"]
    assert "wrong-staple-secret" not in result["_raw_output"]
    right = run_module("celery_queue_length", dict(
        broker_url=f"redis://127.0.0.1:{password_redis}/0", broker_password="right-horse-battery", queues=["default"]))
    assert not right.get("failed"), right
    assert "right-horse-battery" not in right["_raw_output"]


def test_unreachable_broker_is_named():
    result = run_module("celery_queue_length", dict(broker_url="redis://127.0.0.1:1/0", queues=["default"],
                                                    broker_timeout=2))
    assert result["failed"] is True
    assert result["msg"].startswith("cannot reach the broker at 127.0.0.1:1 (redis, db 0): ")


def test_malformed_url_is_named():
    result = run_module("celery_queue_length", dict(broker_url="amqp://guest:pw@rabbit//", queues=["default"]))
    assert result["failed"] is True
    assert "scheme 'amqp' is not supported" in result["msg"]
    assert "pw@" not in result["_raw_output"]


def test_a_play_sets_the_broker_once_for_the_broker_modules(redis_server, producer):
    """meta/runtime.yml's action group: module_defaults for group/pilito.priority_queue.broker."""
    send(producer, "default", 2)
    defaults = {"group/pilito.priority_queue.broker": {"broker_url": redis_server.url()}}
    result = run_module("celery_queue_length", dict(queues=["default"]), module_defaults=defaults)
    assert not result.get("failed"), result
    assert result["queues"]["default"]["waiting"] == 2
    checked = run_module("celery_queue_check", dict(queues=["default"], consumers=False, thresholds={}),
                         module_defaults=defaults)
    assert not checked.get("failed"), checked
    assert checked["queues"]["default"]["waiting"] == 2
