"""The queue check's decisions and its metrics file; the file is read back with the Prometheus
client library's own parser."""

import os

from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.pilito.priority_queue.plugins.modules.celery_queue_check import (
    breaches,
    consumers_per_queue,
    metrics_text,
    write_atomically,
)


def figure(waiting=0, unacked=0, consumers=1, age=None, by_priority=None):
    return dict(total=waiting + unacked, waiting=waiting, unacked=unacked, consumers=consumers,
                oldest_age_seconds=age, by_priority=by_priority or {"0": waiting, "3": 0}, known=True)


def test_consumers_are_counted_per_queue_over_every_worker():
    workers = {"ai@a": ["high"], "ai@b": ["high"], "general@c": ["high", "default", "low"]}
    assert consumers_per_queue(workers, ["high", "default", "low", "legacy"]) == dict(
        high=3, default=1, low=1, legacy=0)


def test_messages_without_a_consumer_are_always_a_breach_and_an_empty_queue_is_not():
    lines = breaches({"celery": figure(waiting=3, unacked=1, consumers=0), "spare": figure(consumers=0)}, {})
    assert lines == ["queue celery: 4 messages wait and no worker consumes it"]


def test_each_threshold_is_one_line_naming_the_queue_the_figure_and_the_limit():
    figures = {"high": figure(waiting=30, unacked=2, consumers=1, age=45.25), "low": figure(waiting=10)}
    thresholds = {"high": dict(max_messages=20, max_age_seconds=30, min_consumers=2), "low": dict(max_messages=10)}
    assert breaches(figures, thresholds) == [
        "queue high: 1 workers consume it, fewer than min_consumers 2",
        "queue high: 32 messages (30 waiting, 2 reserved), above max_messages 20",
        "queue high: the message next in line has waited 45.2 s, above max_age_seconds 30",
    ]


def test_an_unknown_age_or_uncounted_consumers_breach_nothing():
    figures = {"high": figure(waiting=1, consumers=None, age=None)}
    assert breaches(figures, {"high": dict(max_age_seconds=1, min_consumers=1)}) == []


def test_limits_met_exactly_are_not_breaches():
    figures = {"high": figure(waiting=20, consumers=2, age=30.0)}
    assert breaches(figures, {"high": dict(max_messages=20, max_age_seconds=30, min_consumers=2)}) == []


def test_the_metrics_parse_as_prometheus_text_with_base_units_and_labels():
    figures = {"high": dict(figure(waiting=2, unacked=1, consumers=2, age=1.5, by_priority={"0": 1, "3": 1}),
                            redelivered=4),
               "low": figure(waiting=0, consumers=0)}
    text = metrics_text(figures, ["queue high: something"], 0.25, 1796000000.5)
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in families.values() for sample in family.samples}
    assert all(family.type == "gauge" for family in families.values())
    assert samples[("priority_queue_queue_waiting_messages", (("priority", "3"), ("queue", "high")))] == 1
    assert samples[("priority_queue_queue_reserved_messages", (("queue", "high"),))] == 1
    assert samples[("priority_queue_queue_messages", (("queue", "high"),))] == 3
    assert samples[("priority_queue_queue_consumers", (("queue", "low"),))] == 0
    assert samples[("priority_queue_queue_oldest_message_age_seconds", (("queue", "high"),))] == 1.5
    assert ("priority_queue_queue_oldest_message_age_seconds", (("queue", "low"),)) not in samples
    assert samples[("priority_queue_queue_breaches", (("queue", "high"),))] == 1
    assert samples[("priority_queue_queue_redelivered_messages", (("queue", "high"),))] == 4
    assert samples[("priority_queue_queue_redelivered_messages", (("queue", "low"),))] == 0
    assert samples[("priority_queue_queue_breaches", (("queue", "low"),))] == 0
    assert samples[("priority_queue_check_breaches", ())] == 1
    assert samples[("priority_queue_check_last_success_timestamp_seconds", ())] == 1796000000.5
    assert samples[("priority_queue_check_duration_seconds", ())] == 0.25


def test_label_values_are_escaped():
    text = metrics_text({'odd"queue\\': figure()}, [], 0.1, 1.0)
    labels = [sample.labels for family in text_string_to_metric_families(text) for sample in family.samples
              if sample.name == "priority_queue_queue_messages"]
    assert labels == [{"queue": 'odd"queue\\'}]


def test_the_file_is_replaced_whole_and_no_temporary_file_is_left(tmp_path):
    target = tmp_path / "priority_queue.prom"
    target.write_text("old\n")
    write_atomically(str(target), "new\n")
    assert target.read_text() == "new\n"
    assert oct(os.stat(target).st_mode & 0o777) == "0o644"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["priority_queue.prom"]
