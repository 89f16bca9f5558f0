import copy

import pytest

from ansible_collections.pilito.priority_queue.plugins.filter.topology import (
    effective_pools,
    memory_bytes,
    pool_memory_bytes,
    topology_errors,
)

QUEUES = ["high_priority", "default", "low_priority"]
ROUTES = {"chat.tasks.*": "high_priority", "crawler.tasks.crawl_website_task": "low_priority"}
RATES = {"crawler.tasks.crawl_website_task": "30/m"}
POOLS = {
    "celery_ai": {"queues": ["high_priority"], "concurrency": 2, "memory": "512m", "replicas": 1},
    "celery_worker": {"queues": QUEUES, "concurrency": 4, "memory": "1g", "replicas": 1},
}
PHASES = {1: {}, 2: {"celery_ai": {"replicas": 3}, "celery_worker": {"replicas": 2}},
          3: {"celery_ai": {"replicas": 5, "autoscale": "10,2"}, "celery_worker": {"replicas": 3}}}


def errors(queues=None, **changes):
    args = dict(default_queue="default", routes=ROUTES, rate_limits=RATES,
                pools=copy.deepcopy(POOLS), phases=PHASES, phase=1)
    args.update(changes)
    return topology_errors(QUEUES if queues is None else queues, **args)


def test_the_runbook_topology_is_sound():
    assert errors() == []
    for phase in (1, 2, 3, "2"):
        assert errors(phase=phase) == []


def test_phases_are_presets_over_the_pools():
    pools = {pool["name"]: pool for pool in effective_pools(POOLS, PHASES, 3)}
    assert pools["celery_ai"]["replicas"] == 5 and pools["celery_ai"]["autoscale"] == "10,2"
    assert pools["celery_worker"]["replicas"] == 3 and pools["celery_worker"]["concurrency"] == 4
    assert [p["replicas"] for p in effective_pools(POOLS, PHASES, 1)] == [1, 1]


@pytest.mark.parametrize("changes, message", [
    (dict(routes={"chat.tasks.*": "urgent"}), "priority_queue_routes['chat.tasks.*'] routes to 'urgent'"),
    (dict(queues=QUEUES + ["orphan"]), "queue 'orphan' in priority_queue_queues has no consumer"),
    (dict(queues=["default", "default", "high_priority", "low_priority"]), "lists 'default' more than once"),
    (dict(default_queue="celery"), "priority_queue_default_queue 'celery' is not one of"),
    (dict(phase=4), "priority_queue_scale_phase 4 is not one of priority_queue_scale_phases (1, 2, 3)"),
    (dict(rate_limits={"t": "fast"}), "priority_queue_rate_limits['t'] is 'fast'"),
    (dict(pools={}), "priority_queue_pools must declare at least one worker pool"),
])
def test_each_problem_names_its_variable(changes, message):
    assert any(message in error for error in errors(**changes)), errors(**changes)


@pytest.mark.parametrize("field, value, message", [
    ("queues", [], "priority_queue_pools['celery_ai'].queues must list at least one queue"),
    ("queues", ["nope"], "priority_queue_pools['celery_ai'].queues names 'nope'"),
    ("concurrency", 0, "priority_queue_pools['celery_ai'].concurrency must be a positive whole number, got 0"),
    ("concurrency", "2", "concurrency must be a positive whole number, got '2'"),
    ("concurrency", True, "concurrency must be a positive whole number, got True"),
    ("replicas", -1, "priority_queue_pools['celery_ai'].replicas must be a positive whole number"),
    ("memory", "lots", "priority_queue_pools['celery_ai'].memory must be a size like '512m'"),
    ("autoscale", "2,10", "priority_queue_pools['celery_ai'].autoscale must be 'max,min'"),
])
def test_pool_problems_name_the_pool_and_field(field, value, message):
    pools = copy.deepcopy(POOLS)
    pools["celery_ai"][field] = value
    assert any(message in error for error in errors(pools=pools)), errors(pools=pools)


def test_a_pool_with_an_invalid_service_name_is_named():
    pools = copy.deepcopy(POOLS)
    pools["celery ai"] = pools.pop("celery_ai")
    assert any("'celery ai' is not a valid compose service name" in error for error in errors(pools=pools))


def test_memory_sizes():
    assert memory_bytes("512m") == 512 * 1024 ** 2
    assert memory_bytes("1g") == 1024 ** 3
    assert memory_bytes("1.5G") == int(1.5 * 1024 ** 3)
    assert memory_bytes("abc") is None
    pools = effective_pools(POOLS, PHASES, 2)
    assert pool_memory_bytes(pools) == 3 * 512 * 1024 ** 2 + 2 * 1024 ** 3
