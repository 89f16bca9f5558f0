"""celery_worker_info and celery_worker_drain against real Celery workers, through the broker only.
A worker named <pool>@b runs on host "b" as far as a drain by host name is concerned."""

import time

from kombu import pidbox

from conftest import docker, run_module, wait_until
from ansible_collections.pilito.priority_queue.plugins.module_utils.workers import active_queues, command
# readable_tmp and workers are fixtures, used by name.
from worker_harness import (  # noqa: F401 # pylint: disable=unused-import
    QUEUES,
    control_app,
    readable_tmp,
    record_message,
    task_message,
    workers,
)


def test_info_groups_workers_into_pools_with_their_queues_and_stats(redis_server, workers):
    workers("fast@a", ["high_priority"], seed=1)
    workers("general@b", QUEUES, seed=2)
    result = run_module("celery_worker_info", dict(
        broker_url=redis_server.url(0), details=["stats", "active", "reserved"],
        expect=[dict(name="fast", queues=["high_priority"]), dict(name="general", queues=QUEUES)]))
    assert not result.get("failed"), result.get("msg")
    assert result["pools"] == {"fast": ["fast@a"], "general": ["general@b"]}
    assert result["workers"]["general@b"]["queues"] == QUEUES  # its own order
    stats = result["workers"]["general@b"]["stats"]
    assert stats["pool"]["max-concurrency"] == 2 and "broker" not in stats
    assert result["workers"]["fast@a"]["active"] == [] and result["workers"]["fast@a"]["reserved"] == []
    # One host's count: a worker of another host on the same broker is reported too, not cut off.
    one_host = run_module("celery_worker_info", dict(broker_url=redis_server.url(0), wait_for=1, timeout=2))
    assert sorted(one_host["workers"]) == ["fast@a", "general@b"]


def test_info_names_the_pool_short_of_workers_and_the_worker_on_wrong_queues(redis_server, workers):
    workers("general@b", ["high_priority", "default"], seed=2)
    result = run_module("celery_worker_info", dict(
        broker_url=redis_server.url(0), timeout=2,
        expect=[dict(name="fast", replicas=1, queues=["high_priority"]),
                dict(name="general", replicas=1, queues=QUEUES)]))
    assert result["failed"] is True
    assert result["problems"] == [
        "pool fast: 0 of 1 workers answered",
        "worker general@b consumes high_priority, default; pool general must consume high_priority, default, "
        "low_priority"]


def test_info_with_no_worker_and_a_wrong_password_fails_clearly(redis_server):
    result = run_module("celery_worker_info", dict(broker_url=redis_server.url(0), timeout=1,
                                                   expect=[dict(name="x", queues=["q"])]))
    assert result["msg"] == "pool x: 0 of 1 workers answered"
    result = run_module("celery_worker_info", dict(broker_url=f"redis://:secret-pw@127.0.0.1:{redis_server.port}/0",
                                                   timeout=1))
    assert result["failed"] is True and "cannot ask the workers" in result["msg"]
    assert "secret-pw" not in result["_raw_output"]


def test_drain_stops_taking_messages_and_resume_gives_the_queues_back(redis_server, redis_client, workers):
    workers("general@b", QUEUES, seed=2)
    drained = run_module("celery_worker_drain", dict(broker_url=redis_server.url(0), hostnames=["b"]))
    assert not drained.get("failed"), drained.get("msg")
    assert drained["changed"] is True and drained["drained"] == {"general@b": QUEUES}
    redis_client.lpush("default", record_message("default"))
    time.sleep(1.5)
    assert redis_client.llen("default") == 1, "a drained worker took a message"
    again = run_module("celery_worker_drain", dict(broker_url=redis_server.url(0), hostnames=["b"]))
    assert again["changed"] is False and again["drained"] == {}
    resumed = run_module("celery_worker_drain", dict(broker_url=redis_server.url(0), state="resumed",
                                                     drained=drained["drained"]))
    assert resumed["changed"] is True and resumed["drained"] == {"general@b": QUEUES}
    wait_until(lambda: redis_client.llen("started") == 1, "the message taken after the resume", timeout=5)
    info = run_module("celery_worker_info", dict(broker_url=redis_server.url(0), wait_for=1))
    assert sorted(info["workers"]["general@b"]["queues"]) == sorted(QUEUES)


def test_after_a_drain_and_a_stop_every_message_ran_once_or_waits(redis_server, redis_client, workers):
    """A worker that stops right after its drain gives back what it had not started."""
    container = workers("general@b", QUEUES, seed=2, concurrency=1)
    redis_client.lpush("low_priority", task_message("low_priority", "orderapp.sleep", [3]))
    wait_until(lambda: redis_client.llen("low_priority") == 0, "the worker busy", timeout=10)
    for _number in range(3):
        redis_client.lpush("default", record_message("default"))
    run_module("celery_worker_drain", dict(broker_url=redis_server.url(0), hostnames=["b"]))
    docker("stop", "--time", "30", container)
    waiting = redis_client.llen("default") + redis_client.hlen("unacked")
    assert redis_client.llen("started") + waiting == 3


def test_a_host_without_a_worker_is_warned_about_not_hidden(redis_server, workers):
    result = run_module("celery_worker_drain", dict(broker_url=redis_server.url(0), hostnames=["nosuchhost"]))
    assert not result.get("failed")
    assert result["not_drained"] == ["nosuchhost"] and result["changed"] is False
    assert "no Celery worker answered on host nosuchhost" in result["_raw_output"]


def test_drain_in_check_mode_cancels_nothing(redis_server, redis_client, workers):
    workers("general@b", QUEUES, seed=2)
    result = run_module("celery_worker_drain", dict(broker_url=redis_server.url(0), hostnames=["b"]),
                        check=True)
    assert result["drained"] == {"general@b": QUEUES}
    redis_client.lpush("default", record_message("default"))
    wait_until(lambda: redis_client.llen("started") == 1, "the message taken", timeout=5)


def test_a_late_reply_to_an_earlier_command_does_not_hide_the_answer_asked_for(
        redis_server, redis_client, workers, monkeypatch):
    """A drain's ping ends once the hosts asked for answered; the other workers' replies are still
    on their way. kombu names its reply queue after the id() of a per-call object, which CPython
    reuses, so such a reply can land where the next command reads its answers (fixed here so it
    does every time). kombu counted it as the one answer it waited for: "no answer to cancel_consumer"."""
    workers("general@b", QUEUES, seed=2)
    workers("fast@a", ["high_priority"], seed=1)
    monkeypatch.setattr(pidbox.Mailbox, "oid", "pilito-test-oid")
    app = control_app(redis_server)
    with app.connection_for_write() as connection:
        app.control.mailbox(connection)._publish("ping", {}, reply_ticket="an-earlier-ping")
    reply_queue = "pilito-test-oid.reply.celery.pidbox"
    wait_until(lambda: redis_client.llen(reply_queue) == 2, "both workers' late replies", timeout=10)
    answers = command(app, "cancel_consumer", ["general@b"], 5, queue="default")
    assert answers == {"general@b": {"ok": "no longer consuming from default"}}
    assert active_queues(app, 5, nodes=["general@b"]) == {"general@b": ["high_priority", "low_priority"]}
