"""celery_queue_check against a real Redis holding messages on several priority lists and the
reserved messages of a worker that was killed, with a live worker on another queue: the counts it
reports are what a real worker then drains, and `LLEN <queue>` alone counts fewer."""

import importlib.util
import time

import pytest
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from conftest import docker, run_module, wait_until
from rendered_config import render_celery_config
# readable_tmp and workers are fixtures, used by name.
from worker_harness import (  # noqa: F401 # pylint: disable=unused-import
    readable_tmp,
    workers,
)


@pytest.fixture
def producer(redis_server, tmp_path):
    """A producer that loads the rendered config, as the app's web and beat do: its messages carry
    their send time."""
    spec = importlib.util.spec_from_file_location("celery_priority_producer", render_celery_config(tmp_path))
    config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config)
    app = Celery("producer", broker=redis_server.url(), set_as_current=False)
    app.conf.update(config.settings)
    yield app
    app.close()
    from celery.signals import before_task_publish

    before_task_publish.disconnect(dispatch_uid="pilito.priority_queue.sent_at")


def metrics(path):
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(path.read_text()) for sample in family.samples}


def test_counts_match_what_a_worker_drains_and_llen_alone_undercounts(redis_server, redis_client, producer,
                                                                      workers, tmp_path):
    # A worker takes two long tasks and is killed holding them: they stay reserved (kombu's unacked hash).
    for n in range(2):
        producer.send_task("orderapp.hold", args=[f"reserved-{n}", 600], queue="low_priority")
    killed = workers("killed@test", ["low_priority"], 1, concurrency=2)
    wait_until(lambda: redis_client.hlen("unacked") == 2, "two reserved messages")
    docker("kill", "-s", "KILL", killed)
    for n in range(5):
        producer.send_task("orderapp.record", args=[f"waiting-{n}"], queue="low_priority")
    for n in range(3):
        producer.send_task("orderapp.record", args=[f"priority-{n}"], queue="low_priority", priority=6)
    workers("ai@test", ["high_priority"], 2, concurrency=1)
    time.sleep(1.0)

    textfile = tmp_path / "priority_queue.prom"
    result = run_module("celery_queue_check", dict(
        broker_url=redis_server.url(), queues=["high_priority", "low_priority"],
        thresholds={"high_priority": {"min_consumers": 2}, "low_priority": {"max_age_seconds": 600}},
        textfile=str(textfile)))

    low, high = result["queues"]["low_priority"], result["queues"]["high_priority"]
    assert (low["waiting"], low["unacked"], low["total"]) == (8, 2, 10), low
    assert low["by_priority"] == {"0": 5, "3": 0, "6": 3, "9": 0}
    assert redis_client.llen("low_priority") == 5  # what LLEN of the queue's name sees: half of it
    assert (low["consumers"], high["consumers"], high["total"]) == (0, 1, 0)
    assert 1.0 <= low["oldest_age_seconds"] < 60, low
    assert low["redelivered"] == 0  # the killed worker's two are not back yet (its watch waits 20 s)
    assert result["failed"] is True
    assert result["breaches"] == [
        "queue high_priority: 1 workers consume it, fewer than min_consumers 2",
        "queue low_priority: 10 messages wait and no worker consumes it",
    ]
    assert result["msg"] == "\n".join(result["breaches"])
    written = metrics(textfile)
    assert written[("priority_queue_queue_messages", (("queue", "low_priority"),))] == 10
    assert written[("priority_queue_queue_reserved_messages", (("queue", "low_priority"),))] == 2
    assert written[("priority_queue_queue_waiting_messages", (("priority", "6"), ("queue", "low_priority")))] == 3
    assert written[("priority_queue_queue_consumers", (("queue", "high_priority"),))] == 1
    assert written[("priority_queue_check_breaches", ())] == 2
    assert abs(written[("priority_queue_check_last_success_timestamp_seconds", ())] - time.time()) < 60

    # A worker that takes back what the killed one held (after a visibility timeout of 1 s) drains it all.
    workers("drain@test", ["low_priority"], 3, concurrency=2, visibility_timeout=1, env={"HOLD_SCALE": "0"})
    wait_until(lambda: redis_client.llen("started") >= 10 and redis_client.hlen("unacked") == 0, "the drain",
               timeout=90)
    time.sleep(1.0)
    ran = sorted(value.decode() for value in redis_client.lrange("started", 0, -1))
    assert len(ran) == low["total"]
    assert ran == sorted([f"reserved-{n}" for n in range(2)] + [f"waiting-{n}" for n in range(5)]
                         + [f"priority-{n}" for n in range(3)])
    after = run_module("celery_queue_check", dict(broker_url=redis_server.url(), queues=["low_priority"],
                                                  textfile=str(textfile)))
    assert not after.get("failed"), after
    assert after["queues"]["low_priority"]["total"] == 0
    assert after["queues"]["low_priority"]["oldest_age_seconds"] is None


def test_check_mode_measures_and_writes_nothing(redis_server, redis_client, producer, tmp_path):
    producer.send_task("orderapp.record", args=["x"], queue="default")
    textfile = tmp_path / "priority_queue.prom"
    before = {key: redis_client.type(key) for key in redis_client.keys()}
    result = run_module("celery_queue_check", dict(broker_url=redis_server.url(), queues=["default"],
                                                   consumers=False, textfile=str(textfile)), check=True)
    assert not result.get("failed"), result
    assert result["queues"]["default"]["total"] == 1
    assert result["queues"]["default"]["consumers"] is None
    assert result["textfile"] is None and not textfile.exists()
    assert {key: redis_client.type(key) for key in redis_client.keys()} == before


@pytest.mark.parametrize("thresholds, message", [
    ({"defualt": {"max_messages": 1}}, "thresholds.defualt: queue 'defualt' is not in queues ['default']"),
    ({"default": {"max_mesages": 1}}, "thresholds.default may set max_messages, max_age_seconds, min_consumers"),
    ({"default": {"max_messages": -1}}, "thresholds.default.max_messages must be a number not below 0"),
    ({"default": {"max_age_seconds": "soon"}}, "thresholds.default.max_age_seconds must be a number"),
])
def test_bad_thresholds_are_named_before_the_broker_is_asked(thresholds, message):
    result = run_module("celery_queue_check", dict(broker_url="redis://127.0.0.1:1/0", queues=["default"],
                                                   thresholds=thresholds))
    assert result["failed"] is True
    assert result["msg"].startswith(message), result["msg"]
