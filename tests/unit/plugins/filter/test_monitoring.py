from ansible_collections.pilito.priority_queue.plugins.filter.monitoring import (
    queue_check_errors,
    queue_check_thresholds,
)

QUEUES = ["high_priority", "default", "low_priority", "celery"]


def test_sound_thresholds_have_no_error():
    thresholds = {"high_priority": {"max_messages": 50, "max_age_seconds": 2.5, "min_consumers": 2},
                  "celery": {"max_messages": 0}}
    assert queue_check_errors(thresholds, QUEUES) == []


def test_each_problem_names_the_variable_the_queue_and_the_limit():
    thresholds = {"urgent": {"max_messages": 1}, "default": {"max_mesages": 1},
                  "low_priority": {"max_messages": 1.5, "min_consumers": -1, "max_age_seconds": "soon"}}
    assert queue_check_errors(thresholds, QUEUES) == [
        "priority_queue_queue_check_thresholds['urgent']: 'urgent' is not a queue of the topology "
        "(high_priority, default, low_priority, celery)",
        "priority_queue_queue_check_thresholds['default'] may set max_messages, max_age_seconds, min_consumers; "
        "got {'max_mesages': 1}",
        "priority_queue_queue_check_thresholds['low_priority'].max_messages must be a whole number not below 0, "
        "got 1.5",
        "priority_queue_queue_check_thresholds['low_priority'].min_consumers must be a whole number not below 0, "
        "got -1",
        "priority_queue_queue_check_thresholds['low_priority'].max_age_seconds must be a number not below 0, "
        "got 'soon'",
    ]
    assert queue_check_errors(["x"], QUEUES) == [
        "priority_queue_queue_check_thresholds must map queue names to limits, got ['x']"]


def test_every_topology_queue_needs_a_consumer_unless_its_own_limits_say_otherwise():
    merged = queue_check_thresholds(["high_priority", "default"],
                                    {"high_priority": {"max_messages": 5}, "default": {"min_consumers": 0},
                                     "celery": {"max_messages": 0}})
    assert merged == {"high_priority": {"min_consumers": 1, "max_messages": 5}, "default": {"min_consumers": 0},
                      "celery": {"max_messages": 0}}
