import copy

import pytest

from ansible_collections.pilito.priority_queue.plugins.filter.topology import (
    effective_pools,
    memory_bytes,
    memory_in_use_mb,
    memory_shortfall_mb,
    option_errors,
    placed_pools,
    placement_errors,
    pool_memory_bytes,
    pools_on_host,
    scale_phases,
    topology_errors,
)

QUEUES = ["high_priority", "default", "low_priority"]
ROUTES = {"chat.tasks.*": "high_priority", "crawler.tasks.crawl_website_task": "low_priority"}
RATES = {"crawler.tasks.crawl_website_task": "30/m"}
POOLS = [
    {"name": "celery_ai", "queues": ["high_priority"], "concurrency": 2, "memory": "512m",
     "phases": {2: {"replicas": 3}, 3: {"replicas": 5, "autoscale": "10,2"}}},
    {"name": "celery_worker", "queues": QUEUES, "concurrency": 4, "memory": "1g",
     "phases": {2: {"replicas": 2}, 3: {"replicas": 3}}},
]


def pools_with(pool_name, **changes):
    pools = copy.deepcopy(POOLS)
    next(pool for pool in pools if pool["name"] == pool_name).update(changes)
    return pools


def errors(queues=None, **changes):
    args = dict(default_queue="default", routes=ROUTES, rate_limits=RATES, pools=copy.deepcopy(POOLS), phase=1)
    args.update(changes)
    return topology_errors(QUEUES if queues is None else queues, **args)


def test_the_runbook_topology_is_sound():
    assert errors() == []
    for phase in (1, 2, 3, "2"):
        assert errors(phase=phase) == []


def test_phases_are_presets_over_the_pools():
    pools = {pool["name"]: pool for pool in effective_pools(POOLS, 3)}
    assert pools["celery_ai"]["replicas"] == 5 and pools["celery_ai"]["autoscale"] == "10,2"
    assert pools["celery_worker"]["replicas"] == 3 and pools["celery_worker"]["concurrency"] == 4
    assert [p["replicas"] for p in effective_pools(POOLS, 1)] == [1, 1]
    assert "phases" not in pools["celery_ai"]


def test_a_phase_from_the_command_line_applies_its_presets():
    """-e priority_queue_scale_phase=2 arrives as the string "2"."""
    assert [p["replicas"] for p in effective_pools(POOLS, "2")] == [3, 2]
    assert scale_phases(POOLS) == [1, 2, 3]


def test_pools_of_their_own_names_need_no_phases():
    pools = [{"name": "fast", "queues": ["high_priority"], "concurrency": 1, "memory": "256m"},
             {"name": "general", "queues": QUEUES, "concurrency": 2, "memory": "512m"}]
    assert errors(pools=pools) == []
    assert [p["replicas"] for p in effective_pools(pools, 1)] == [1, 1]


def test_a_phase_no_pool_has_presets_for_is_refused():
    pools = [{"name": "general", "queues": QUEUES, "concurrency": 2, "memory": "512m"}]
    assert errors(pools=pools, phase="2") == [
        "priority_queue_scale_phase 2: no pool in priority_queue_pools has presets for phase 2 (phases known: 1); "
        "add them under a pool's phases, e.g. phases: {2: {replicas: 2}}"]


@pytest.mark.parametrize("changes, message", [
    (dict(routes={"chat.tasks.*": "urgent"}), "priority_queue_routes['chat.tasks.*'] routes to 'urgent'"),
    (dict(queues=QUEUES + ["orphan"]), "queue 'orphan' in priority_queue_queues has no consumer"),
    (dict(queues=["default", "default", "high_priority", "low_priority"]), "lists 'default' more than once"),
    (dict(default_queue="celery"), "priority_queue_default_queue 'celery' is not one of"),
    (dict(latency_queue="ai"), "priority_queue_latency_queue 'ai' is not one of"),
    (dict(phase=4), "priority_queue_scale_phase 4: no pool in priority_queue_pools has presets for phase 4 "
                    "(phases known: 1, 2, 3)"),
    (dict(phase="two"), "priority_queue_scale_phase must be a whole number, got 'two'"),
    (dict(rate_limits={"t": "fast"}), "priority_queue_rate_limits['t'] is 'fast'"),
    (dict(pools=[]), "priority_queue_pools must be a list of at least one worker pool"),
    (dict(pools={"celery_ai": {}}), "priority_queue_pools must be a list of at least one worker pool"),
    (dict(pools=POOLS + [POOLS[0]]), "priority_queue_pools names the pool 'celery_ai' more than once"),
    (dict(pools=pools_with("celery_ai", threads=2)), "priority_queue_pools['celery_ai'] has unknown settings threads"),
    (dict(pools=pools_with("celery_ai", phases={"x": {}})), "priority_queue_pools['celery_ai'].phases: 'x' is not a"),
    (dict(pools=pools_with("celery_ai", phases={2: {"queues": []}})), "priority_queue_pools['celery_ai'].phases[2] may"),
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
    pools = pools_with("celery_ai", **{field: value})
    assert any(message in error for error in errors(pools=pools)), errors(pools=pools)


def test_a_pool_with_an_invalid_service_name_is_named():
    pools = pools_with("celery_ai", name="celery ai")
    assert any("'celery ai' is not a valid compose service name" in error for error in errors(pools=pools))


def test_memory_sizes():
    assert memory_bytes("512m") == 512 * 1024 ** 2
    assert memory_bytes("1g") == 1024 ** 3
    assert memory_bytes("1.5G") == int(1.5 * 1024 ** 3)
    assert memory_bytes("abc") is None
    pools = effective_pools(POOLS, 2)
    assert pool_memory_bytes(pools) == 3 * 512 * 1024 ** 2 + 2 * 1024 ** 3


def test_memory_in_use_from_docker_stats():
    assert memory_in_use_mb(["136.6MiB / 512MiB", "1.5GiB / 23.54GiB", "512kB / 1GiB", "?"]) == 137 + 1536
    assert memory_in_use_mb([]) == 0


def test_an_unchanged_redeploy_on_a_busy_host_fits():
    """The pools (1.5 GiB of limits) already run and use 1 GiB; 700 MiB are free. Compared with free
    memory alone (the old check) they would be refused; what they use is theirs to keep."""
    pools = effective_pools(POOLS, 1)
    assert memory_shortfall_mb(pools, 700) == 1536 - 700
    assert memory_shortfall_mb(pools, 700, workers_in_use_mb=1024) == 0


GROUPS = {"all": ["app1", "ai1", "ai2", "work1"], "app": ["app1"], "ai": ["ai1", "ai2"], "workers": ["work1"],
          "compose_hosts": ["app1", "ai1", "ai2", "work1"], "ungrouped": []}
PLACED = [
    {"name": "celery_ai", "queues": ["high_priority"], "concurrency": 2, "memory": "512m", "hosts": ["ai"]},
    {"name": "celery_worker", "queues": QUEUES, "concurrency": 4, "memory": "1g", "hosts": ["app", "workers"],
     "phases": {2: {"replicas": 2}}},
    {"name": "celery_misc", "queues": ["default"], "concurrency": 1, "memory": "256m"},
]


def test_without_hosts_every_pool_runs_on_the_app_host_as_before():
    pools = effective_pools(POOLS)
    assert pools_on_host(pools, "app1", GROUPS, "app1") == pools
    assert pools_on_host(pools, "ai1", GROUPS, "app1") == []
    assert [pool["replicas"] for pool in placed_pools(pools, GROUPS, "app1")] == [1, 1]
    assert placement_errors(pools, GROUPS, "app1", GROUPS["compose_hosts"]) == []


def test_pools_run_where_their_groups_say_and_count_replicas_over_all_hosts():
    pools = effective_pools(PLACED, 2)
    assert [p["name"] for p in pools_on_host(pools, "app1", GROUPS, "app1")] == ["celery_misc", "celery_worker"]
    assert [p["name"] for p in pools_on_host(pools, "ai2", GROUPS, "app1")] == ["celery_ai"]
    assert [p["name"] for p in pools_on_host(pools, "work1", GROUPS, "app1")] == ["celery_worker"]
    placed = {pool["name"]: pool for pool in placed_pools(pools, GROUPS, "app1")}
    assert placed["celery_ai"]["hosts"] == ["ai1", "ai2"] and placed["celery_ai"]["replicas"] == 2
    assert placed["celery_worker"]["hosts"] == ["app1", "work1"] and placed["celery_worker"]["replicas"] == 4
    assert placed["celery_misc"]["hosts"] == ["app1"] and placed["celery_misc"]["replicas"] == 1


def test_a_pool_can_name_a_host_instead_of_a_group():
    pools = effective_pools([dict(PLACED[0], hosts=["ai2"])] + PLACED[1:])
    assert [p["name"] for p in pools_on_host(pools, "ai2", GROUPS, "app1")] == ["celery_ai"]
    assert pools_on_host(pools, "ai1", GROUPS, "app1") == []


def test_placement_outside_the_inventory_or_the_play_is_refused_by_name():
    pools = effective_pools([dict(PLACED[0], hosts=["gpu"])] + PLACED[1:])
    errors = placement_errors(pools, GROUPS, "app1", GROUPS["compose_hosts"])
    assert errors == ["priority_queue_pools['celery_ai'].hosts: 'gpu' is neither a group with hosts nor a host "
                      "of the inventory"]
    errors = placement_errors(effective_pools(PLACED), GROUPS, "app1", ["app1", "work1"])
    assert len(errors) == 1 and "priority_queue_pools['celery_ai'].hosts places it on ai1, ai2, not in this play" in errors[0]
    errors = placement_errors(effective_pools(PLACED), GROUPS, "app9", GROUPS["compose_hosts"])
    assert errors[0].startswith("priority_queue_app_host 'app9' is not a host of this play")


def test_hosts_must_be_a_list_of_names():
    errors = topology_errors(QUEUES, "default", ROUTES, RATES, pools_with("celery_ai", hosts="ai"), 1, "high_priority")
    assert errors == ["priority_queue_pools['celery_ai'].hosts must list inventory groups or hosts (empty: the app "
                      "host), got 'ai'"]


def test_options_the_topology_rests_on_are_refused_naming_the_variable():
    queues = ["high_priority", "default"]
    assert option_errors(300, ["celery"], queues) == []
    assert option_errors("300", [], queues) == []  # -e priority_queue_longest_task_seconds=300
    for bad in (0, -5, "0", "soon", 1.5, True, None):
        errors = option_errors(bad, [], queues)
        assert len(errors) == 1 and errors[0].startswith("priority_queue_longest_task_seconds must be a whole "
                                                         "number of seconds above 0"), (bad, errors)
    both = option_errors(300, ["celery", "default"], queues)
    assert both == ["priority_queue_legacy_queues lists 'default', which is also one of priority_queue_queues: "
                    "a legacy queue is one the topology no longer uses (its messages move to the default queue); "
                    "take it out of one of them"]
    assert option_errors(300, "celery", queues) == ["priority_queue_legacy_queues must list queue names, got 'celery'"]
