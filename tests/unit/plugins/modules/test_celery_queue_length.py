"""celery_queue_length on an in-memory Redis laid out as kombu's Redis transport stores queues: every
priority list and the reserved messages counted, thresholds, and the errors that name the option."""

import json

import pytest

from ansible_collections.pilito.priority_queue.plugins.modules import celery_queue_length
from ansible_collections.pilito.priority_queue.plugins.modules.celery_queue_length import over_threshold

from .conftest import FakeRedis, assert_documented, broker_target


def reserved(routing_key, tag):
    return json.dumps([{"headers": {"id": tag}, "properties": {"delivery_tag": tag}}, "", routing_key])


def broker(prefix=""):
    return FakeRedis(
        lists={prefix + "high_priority": ["m1", "m2"], prefix + "high_priority\x06\x166": ["m3"],
               prefix + "low_priority\x06\x169": ["m4"]},
        hashes={prefix + "unacked": {"t1": reserved("high_priority", "t1"), "t2": reserved("elsewhere", "t2"),
                                     "t3": "not kombu's format"}},
        sets={prefix + "_kombu.binding.default": {"default\x06\x16\x06\x16default"}})


@pytest.fixture
def measure(run_module, monkeypatch):
    """measure(client, **args) -> (failed, result, connected): the module run on this fake broker."""
    def run(client, check=False, **args):
        connected = []

        def connect(module):
            connected.append(True)
            return broker_target(), client

        monkeypatch.setattr(celery_queue_length, "connect", connect)
        failed, result = run_module(celery_queue_length, check=check, **args)
        return failed, result, bool(connected)
    return run


def test_a_queue_over_its_threshold_is_named_and_one_at_it_is_not():
    result = {"high": dict(total=21), "low": dict(total=20)}
    assert over_threshold(result, {"high": 20, "low": 20}) == [dict(queue="high", total=21, threshold=20)]
    assert over_threshold(result, {"high": 21}) == []
    assert over_threshold(result, {}) == []


def test_every_priority_list_and_the_reserved_messages_are_counted(measure):
    failed, result, _connected = measure(broker(), queues=["high_priority", "default", "low_priority"])
    assert not failed
    high, default, low = (result["queues"][name] for name in ("high_priority", "default", "low_priority"))
    assert high["by_priority"] == {"0": 2, "3": 0, "6": 1, "9": 0}
    assert (high["waiting"], high["unacked"], high["total"], high["known"]) == (3, 1, 4, True)
    assert (low["waiting"], low["total"], low["by_priority"]["9"]) == (1, 1, 1)
    assert (default["total"], default["known"]) == (0, True)  # empty, but bound: no warning
    assert result["total"] == 5
    assert (result["exceeded"], result["changed"], result["warnings"]) == ([], False, [])
    assert result["broker"] == "broker:6379 (redis, db 0)"


def test_a_queue_with_no_messages_and_no_binding_is_zero_with_a_warning(measure):
    failed, result, _connected = measure(broker(), queues=["high_priorty"])
    assert not failed
    assert result["queues"]["high_priorty"]["total"] == 0 and result["queues"]["high_priorty"]["known"] is False
    assert result["warnings"] == ["queue 'high_priorty' has no messages and no kombu binding on broker:6379 "
                                  "(redis, db 0): reported as 0; check the name"]


def test_an_empty_broker_reports_zero_everywhere(measure):
    failed, result, _connected = measure(FakeRedis(), queues=["high_priority"], thresholds={"high_priority": 0})
    assert not failed
    assert result["queues"]["high_priority"] == dict(total=0, waiting=0, unacked=0, known=False, oldest_age_seconds=None,
                                                     by_priority={"0": 0, "3": 0, "6": 0, "9": 0})
    assert result["total"] == 0 and result["exceeded"] == []


def test_reserved_messages_are_left_out_when_asked(measure):
    failed, result, _connected = measure(broker(), queues=["high_priority"], count_unacked=False)
    assert not failed and result["queues"]["high_priority"]["unacked"] == 0 and result["total"] == 3


def test_priority_steps_and_key_prefix_are_the_ones_given(measure):
    client = FakeRedis(lists={"pq:jobs": ["a"], "pq:jobs\x06\x165": ["b", "c"], "jobs": ["not ours"]})
    failed, result, _connected = measure(client, queues=["jobs"], priority_steps=[0, 5], broker_key_prefix="pq:")
    assert not failed
    assert result["queues"]["jobs"]["by_priority"] == {"0": 1, "5": 2}
    assert result["total"] == 3


def test_a_threshold_exceeded_fails_naming_the_queue_with_the_figures_still_returned(measure):
    failed, result, _connected = measure(broker(), queues=["high_priority", "low_priority"],
                                         thresholds={"high_priority": "3", "low_priority": 1})
    assert failed
    assert result["msg"] == "queue high_priority holds 4 messages, above its threshold of 3"
    assert result["exceeded"] == [dict(queue="high_priority", total=4, threshold=3)]
    assert result["queues"]["high_priority"]["total"] == 4 and result["total"] == 5


def test_check_mode_measures_the_same(measure):
    assert measure(broker(), queues=["high_priority"])[1]["queues"] == measure(
        broker(), check=True, queues=["high_priority"])[1]["queues"]


@pytest.mark.parametrize("args, message", [
    (dict(queues=[]), "queues must name at least one queue, and no name may be empty"),
    (dict(queues=["high", ""]), "queues must name at least one queue, and no name may be empty"),
    (dict(queues=["high", "high"]), "queues lists a name twice: ['high', 'high']"),
    (dict(queues=["high"], thresholds={"low": 5}), "thresholds names queue 'low', which is not in queues ['high']"),
    (dict(queues=["high"], thresholds={"high": "many"}), "thresholds.high must be a whole number, got 'many'"),
    (dict(queues=["high"], thresholds={"high": None}), "thresholds.high must be a whole number, got None"),
    (dict(queues=["high"], thresholds={"high": 2.5}), "thresholds.high must be a whole number, got 2.5"),
    (dict(queues=["high"], thresholds={"high": True}), "thresholds.high must be a whole number, got True"),
    (dict(queues=["high"], thresholds={"high": -1}), "thresholds.high must not be negative, got -1"),
])
def test_bad_options_fail_naming_the_option_before_the_broker_is_reached(measure, args, message):
    failed, result, connected = measure(broker(), **args)
    assert failed
    assert result["msg"] == message
    assert not connected


def test_a_whole_float_threshold_is_that_number(measure):
    failed, result, _connected = measure(broker(), queues=["high_priority"], thresholds={"high_priority": 3.0})
    assert failed and result["exceeded"] == [dict(queue="high_priority", total=4, threshold=3)]


def test_documentation_matches_the_argument_spec(monkeypatch):
    assert_documented(celery_queue_length, monkeypatch)
