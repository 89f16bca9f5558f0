import base64
import json

import pytest

from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import probe_message
from ansible_collections.pilito.priority_queue.plugins.modules.celery_latency_probe import (
    percentile,
    poll_pause,
    summarise,
)


@pytest.mark.parametrize("fraction, expected", [(0.5, 5), (0.95, 10), (0.99, 10), (0.1, 1), (0.11, 2)])
def test_nearest_rank_percentiles(fraction, expected):
    assert percentile([7, 1, 9, 3, 5, 2, 8, 4, 10, 6], fraction) == expected


def test_percentile_of_one_sample_is_that_sample():
    assert percentile([0.25], 0.99) == 0.25


def test_summary_has_every_figure():
    summary = summarise([0.003, 0.001, 0.002])
    assert summary == {"samples": [0.003, 0.001, 0.002], "p50": 0.002, "p95": 0.003, "p99": 0.003, "max": 0.003}


def test_probe_is_a_celery_protocol_2_accumulate_message():
    message = probe_message("high_priority", "task-1", "tag-1")
    assert message["headers"]["task"] == "celery.accumulate"
    assert message["headers"]["id"] == message["properties"]["correlation_id"] == "task-1"
    assert message["properties"]["delivery_info"] == {"exchange": "", "routing_key": "high_priority"}
    args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == (["task-1"], {})
    assert set(embed) == {"callbacks", "errbacks", "chain", "chord"}
    json.dumps(message)  # what is pushed to Redis


def test_polls_are_fine_at_first_and_coarser_with_the_wait():
    assert poll_pause(0.001, 0.0) == 0.001
    assert poll_pause(0.001, 0.5) == 0.025
    assert poll_pause(0.001, 30.0) == 0.05
    assert poll_pause(0.2, 30.0) == 0.2  # a coarser resolution asked for is kept
