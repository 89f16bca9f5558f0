"""celery_worker_drain on a fake Celery app whose workers answer remote control: which workers are
drained, what is cancelled and added back, check mode, and the errors that name the option."""

import json

import pytest
import redis

from ansible_collections.pilito.priority_queue.plugins.modules import celery_worker_drain

from .conftest import SECRET, FakeControlApp, FakeWorker, assert_documented, broker_target

QUEUES = ["high_priority", "default", "low_priority"]


@pytest.fixture
def drain(run_module, bound_workers, monkeypatch):
    """drain(workers, **args) -> (failed, result, app): the module run on these fake workers."""
    def run(nodes, check=False, **args):
        app = FakeControlApp(nodes)
        monkeypatch.setattr(celery_worker_drain, "workers_app", lambda module: (broker_target(), app))
        failed, result = run_module(celery_worker_drain, check=check, **args)
        return failed, result, app
    return run


def test_only_the_workers_on_the_host_names_drain_and_each_queue_is_cancelled(drain):
    nodes = {"celery_worker@c1": FakeWorker(QUEUES), "celery_ai@c1": FakeWorker(["high_priority"]),
             "celery_worker@c2": FakeWorker(QUEUES)}
    failed, result, app = drain(nodes, hostnames=["c1"])
    assert not failed
    assert result["changed"] is True
    assert result["drained"] == {"celery_worker@c1": QUEUES, "celery_ai@c1": ["high_priority"]}
    assert all(isinstance(queues, list) for queues in result["drained"].values())
    assert result["not_drained"] == []
    assert (nodes["celery_worker@c1"].queues, nodes["celery_ai@c1"].queues) == ([], [])
    assert nodes["celery_worker@c2"].queues == QUEUES
    assert sorted(destination[0] for destination in app.sent("cancel_consumer")) == [
        "celery_ai@c1", "celery_worker@c1", "celery_worker@c1", "celery_worker@c1"]
    assert "s3cret" not in json.dumps(result)


def test_a_second_drain_changes_nothing(drain):
    nodes = {"celery_worker@c1": FakeWorker([])}
    failed, result, app = drain(nodes, hostnames=["c1"])
    assert (failed, result["changed"], result["drained"]) == (False, False, {})
    assert app.sent("cancel_consumer") == [] and app.sent("priority_queue_fetch") == []


def test_check_mode_reports_the_queues_and_cancels_nothing(drain):
    nodes = {"celery_worker@c1": FakeWorker(QUEUES)}
    failed, result, app = drain(nodes, check=True, hostnames=["c1"])
    assert not failed
    assert result["changed"] is True and result["drained"] == {"celery_worker@c1": QUEUES}
    assert nodes["celery_worker@c1"].queues == QUEUES
    assert app.sent("cancel_consumer") == [] and app.sent("priority_queue_fetch") == []


def test_a_host_where_no_worker_answers_is_named_and_warned_about(drain):
    nodes = {"celery_worker@c1": FakeWorker(QUEUES)}
    failed, result, _app = drain(nodes, hostnames=["c1", "gone"], timeout=0.3)
    assert not failed
    assert result["not_drained"] == ["gone"]
    assert result["drained"] == {"celery_worker@c1": QUEUES}
    assert [warning for warning in result["warnings"] if "gone" in warning] == [
        "no Celery worker answered on host gone: it was not drained, and stopping it may lose the message of a "
        "fetch in flight"]


def test_the_drain_waits_until_no_fetch_is_in_flight(drain):
    nodes = {"celery_worker@c1": FakeWorker(QUEUES, in_flight=2)}
    failed, _result, app = drain(nodes, hostnames=["c1"], fetch_seconds=30)
    assert not failed
    # in flight, in flight, done: the third status ends the wait, long before fetch_seconds
    assert app.sent("priority_queue_fetch", mode="status") == [["celery_worker@c1"]] * 3


def test_a_worker_without_the_control_command_is_asked_once_and_the_wait_is_fetch_seconds(drain):
    nodes = {"celery_worker@c1": FakeWorker(QUEUES, control=False)}
    failed, result, app = drain(nodes, hostnames=["c1"], fetch_seconds=0.05)
    assert not failed and result["drained"] == {"celery_worker@c1": QUEUES}
    assert app.sent("priority_queue_fetch", mode="status") == [["celery_worker@c1"]]


def test_a_worker_that_refuses_to_cancel_fails_the_drain_naming_it(drain):
    nodes = {"celery_worker@c1": FakeWorker(QUEUES, errors={"cancel_consumer": "consumer is gone"})}
    failed, result, _app = drain(nodes, hostnames=["c1"])
    assert failed
    assert result["msg"] == ("draining the workers failed: celery_worker@c1 answered cancel_consumer with: "
                             "consumer is gone")


def test_a_worker_that_answers_a_ping_but_not_active_queues_fails_the_drain(drain):
    worker = FakeWorker(QUEUES)
    reply = worker.reply
    worker.reply = lambda name, *args: None if name == "active_queues" else reply(name, *args)
    failed, result, _app = drain({"celery_worker@c1": worker}, hostnames=["c1"], timeout=0.5)
    assert failed
    assert result["msg"] == "draining the workers failed: no answer to active_queues within 0.5 s from celery_worker@c1"


def test_state_drained_without_host_names_fails_naming_the_option(drain):
    nodes = {"celery_worker@c1": FakeWorker(QUEUES)}
    failed, result, app = drain(nodes)
    assert failed
    assert "hostnames" in result["msg"] and "state=drained" in result["msg"]
    assert app.broadcasts == [] and nodes["celery_worker@c1"].queues == QUEUES


def test_an_empty_host_name_fails_naming_the_option(drain):
    failed, result, app = drain({"celery_worker@c1": FakeWorker(QUEUES)}, hostnames=["c1", ""])
    assert failed and "hostnames" in result["msg"]
    assert app.broadcasts == []


@pytest.mark.parametrize("args", [dict(timeout=0), dict(timeout=-1), dict(fetch_seconds=-0.1)])
def test_timeouts_out_of_range_fail_naming_both_options(drain, args):
    failed, result, app = drain({}, hostnames=["c1"], **args)
    assert failed
    assert result["msg"] == "timeout must be positive and fetch_seconds not negative"
    assert app.broadcasts == []


def test_resume_adds_back_only_the_queues_a_worker_does_not_consume(drain):
    nodes = {"celery_worker@c1": FakeWorker(["default"]), "celery_ai@c1": FakeWorker([])}
    failed, result, app = drain(nodes, state="resumed",
                                drained={"celery_worker@c1": QUEUES, "celery_ai@c1": ["high_priority"]})
    assert not failed
    assert result["changed"] is True
    assert result["drained"] == {"celery_worker@c1": ["high_priority", "low_priority"],
                                 "celery_ai@c1": ["high_priority"]}
    assert nodes["celery_worker@c1"].queues == ["default", "high_priority", "low_priority"]
    assert len(app.sent("add_consumer")) == 3


def test_a_second_resume_changes_nothing(drain):
    nodes = {"celery_worker@c1": FakeWorker(QUEUES)}
    failed, result, app = drain(nodes, state="resumed", drained={"celery_worker@c1": QUEUES})
    assert (failed, result["changed"], result["drained"]) == (False, False, {})
    assert app.sent("add_consumer") == []


def test_resume_in_check_mode_adds_nothing(drain):
    nodes = {"celery_worker@c1": FakeWorker([])}
    failed, result, app = drain(nodes, check=True, state="resumed", drained={"celery_worker@c1": ["default"]})
    assert (failed, result["changed"], result["drained"]) == (False, True, {"celery_worker@c1": ["default"]})
    assert app.sent("add_consumer") == [] and nodes["celery_worker@c1"].queues == []


def test_resume_skips_a_worker_that_is_gone_with_a_warning(drain):
    nodes = {"celery_worker@c1": FakeWorker([])}
    failed, result, _app = drain(nodes, state="resumed", timeout=0.3,
                                 drained={"celery_worker@c1": ["default"], "celery_worker@old": ["default"]})
    assert not failed
    assert result["drained"] == {"celery_worker@c1": ["default"]}
    assert result["warnings"] == ["celery_worker@old did not answer; it has no queues to take back (stopped or gone)"]


def test_resume_refuses_queues_that_are_not_a_list(drain):
    # A string would be taken letter by letter: add_consumer h, i, g, ...
    nodes = {"celery_worker@c1": FakeWorker([])}
    failed, result, app = drain(nodes, state="resumed", drained={"celery_worker@c1": "high_priority"})
    assert failed
    assert result["msg"] == "drained.celery_worker@c1 must be a list of queue names, got 'high_priority'"
    assert app.sent("add_consumer") == [] and nodes["celery_worker@c1"].queues == []


def test_a_broker_error_is_reported_without_the_password(drain, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise redis.ConnectionError(f"Error connecting to redis://:{SECRET}@broker:6379/0")

    monkeypatch.setattr(FakeControlApp, "broadcast", refuse)
    failed, result, _app = drain({"celery_worker@c1": FakeWorker(QUEUES)}, hostnames=["c1"])
    assert failed
    assert result["msg"].startswith("cannot reach the workers through the broker at broker:6379 (redis, db 0): "
                                    "ConnectionError: Error connecting to redis://:********@broker")
    assert SECRET not in json.dumps(result)


def test_documentation_matches_the_argument_spec(monkeypatch):
    assert_documented(celery_worker_drain, monkeypatch)
