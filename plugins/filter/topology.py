# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The topology's checks and derived values, in one place so every role reads the same answer."""

from __future__ import annotations

import re

MEMORY = re.compile(r"^(\d+(?:\.\d+)?)([bkmg]?)$", re.IGNORECASE)
MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
AUTOSCALE = re.compile(r"^(\d+),(\d+)$")


def memory_bytes(value):
    """Compose's mem_limit notation ("512m", "1g") in bytes; None when it is not one."""
    match = MEMORY.match(str(value).strip())
    if not match:
        return None
    return int(float(match.group(1)) * MEMORY_UNITS[match.group(2).lower()])


POOL_FIELDS = ("name", "queues", "concurrency", "memory", "replicas", "autoscale", "hosts", "phases")
PHASE_FIELDS = ("concurrency", "memory", "replicas", "autoscale")


def phase_number(value):
    """A scale phase as a whole number, whether it came from YAML (2) or the command line ("2");
    None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _pool_phases(pool):
    """The pool's phase presets keyed by phase number (keys that are not numbers are left out)."""
    phases = pool.get("phases") if isinstance(pool, dict) else None
    if not isinstance(phases, dict):
        return {}
    return {phase_number(key): value for key, value in phases.items() if phase_number(key) is not None}


def _pool_list(pools):
    return [pool for pool in pools if isinstance(pool, dict)] if isinstance(pools, list) else []


def scale_phases(pools):
    """Every phase the topology knows: 1 (the pools as declared) and each phase a pool has presets for."""
    return sorted({1}.union(*(_pool_phases(pool) for pool in _pool_list(pools))))


def effective_pools(pools, phase=1):
    """Each pool with its preset for the scale phase applied, as a list sorted by name."""
    number = phase_number(phase)
    result = []
    for pool in sorted(_pool_list(pools), key=lambda item: str(item.get("name"))):
        effective = dict(replicas=1, autoscale="", hosts=[])
        effective.update({key: value for key, value in pool.items() if key != "phases" and value is not None})
        effective.update(_pool_phases(pool).get(number) or {})
        result.append(effective)
    return result


def _is_positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _phase_errors(pools, phase):
    errors = []
    number = phase_number(phase)
    known = scale_phases(pools)
    if number is None:
        errors.append(f"priority_queue_scale_phase must be a whole number, got {phase!r}")
    elif number not in known:
        errors.append(f"priority_queue_scale_phase {number}: no pool in priority_queue_pools has presets for "
                      f"phase {number} (phases known: {', '.join(map(str, known))}); add them under a pool's "
                      f"phases, e.g. phases: {{{number}: {{replicas: 2}}}}")
    for pool in _pool_list(pools):
        where = f"priority_queue_pools[{pool.get('name')!r}].phases"
        phases = pool.get("phases")
        if phases is None:
            continue
        if not isinstance(phases, dict):
            errors.append(f"{where} must map a phase number to presets, got {phases!r}")
            continue
        for key, preset in phases.items():
            if phase_number(key) is None or phase_number(key) < 1:
                errors.append(f"{where}: {key!r} is not a phase number (1, 2, 3 ...)")
            elif not isinstance(preset, dict) or set(preset) - set(PHASE_FIELDS):
                errors.append(f"{where}[{key}] may set {', '.join(PHASE_FIELDS)}; got {preset!r}")
    return errors


def topology_errors(queues, default_queue, routes, rate_limits, pools, phase, latency_queue=None):
    """Every problem with the topology, each naming the variable; empty when it is sound."""
    errors = []
    queues = queues if isinstance(queues, list) else []
    if not queues:
        errors.append("priority_queue_queues must list at least one queue name")
    for queue in sorted({q for q in queues if queues.count(q) > 1}):
        errors.append(f"priority_queue_queues lists {queue!r} more than once")
    for queue in queues:
        if not isinstance(queue, str) or not re.match(r"^[A-Za-z0-9_.:-]+$", queue):
            errors.append(f"priority_queue_queues: {queue!r} is not a valid queue name (letters, digits, _ . : -)")
    if default_queue not in queues:
        errors.append(f"priority_queue_default_queue {default_queue!r} is not one of priority_queue_queues {queues}")
    if latency_queue is not None and latency_queue not in queues:
        errors.append(f"priority_queue_latency_queue {latency_queue!r} is not one of priority_queue_queues {queues}")
    for pattern, queue in (routes or {}).items():
        if queue not in queues:
            errors.append(f"priority_queue_routes[{pattern!r}] routes to {queue!r}, which is not in "
                          f"priority_queue_queues {queues}")
    for task, limit in (rate_limits or {}).items():
        if not re.match(r"^\d+(\.\d+)?(/[smh])?$", str(limit)):
            errors.append(f"priority_queue_rate_limits[{task!r}] is {limit!r}; use Celery's form, e.g. '30/m'")
    if not isinstance(pools, list) or not pools:
        errors.append("priority_queue_pools must be a list of at least one worker pool "
                      "(each with name, queues, concurrency and memory)")
        pools = []
    for index, pool in enumerate(pools):
        if not isinstance(pool, dict):
            errors.append(f"priority_queue_pools[{index}] must be a pool (name, queues, concurrency, memory), "
                          f"got {pool!r}")
        elif set(pool) - set(POOL_FIELDS):
            errors.append(f"priority_queue_pools[{pool.get('name', index)!r}] has unknown settings "
                          f"{', '.join(sorted(set(pool) - set(POOL_FIELDS)))}; known: {', '.join(POOL_FIELDS)}")
    names = [pool.get("name") for pool in _pool_list(pools)]
    for name in sorted({str(n) for n in names if names.count(n) > 1}):
        errors.append(f"priority_queue_pools names the pool {name!r} more than once")
    errors.extend(_phase_errors(pools, phase))
    consumed = set()
    for pool in effective_pools(pools, phase):
        name = pool.get("name")
        where = f"priority_queue_pools[{name!r}]"
        if not isinstance(name, str) or not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", name):
            errors.append(f"{where}: {name!r} is not a valid compose service name")
        pool_queues = pool.get("queues")
        if not pool_queues or not isinstance(pool_queues, list):
            errors.append(f"{where}.queues must list at least one queue")
            pool_queues = []
        for queue in pool_queues:
            if queue not in queues:
                errors.append(f"{where}.queues names {queue!r}, which is not in priority_queue_queues {queues}")
        if len(set(pool_queues)) != len(pool_queues):
            errors.append(f"{where}.queues lists a queue more than once")
        consumed.update(pool_queues)
        if not pool.get("autoscale") and not _is_positive_int(pool.get("concurrency")):
            errors.append(f"{where}.concurrency must be a positive whole number, got {pool.get('concurrency')!r}")
        if pool.get("autoscale"):
            match = AUTOSCALE.match(str(pool["autoscale"]))
            if not match or int(match.group(1)) < int(match.group(2)) or int(match.group(1)) < 1:
                errors.append(f"{where}.autoscale must be 'max,min' with max >= min >= 0, got {pool['autoscale']!r}")
        if not _is_positive_int(pool.get("replicas")):
            errors.append(f"{where}.replicas must be a positive whole number, got {pool.get('replicas')!r}")
        if memory_bytes(pool.get("memory", "")) in (None, 0):
            errors.append(f"{where}.memory must be a size like '512m' or '1g', got {pool.get('memory')!r}")
        hosts = pool.get("hosts")
        if not isinstance(hosts, list) or not all(isinstance(entry, str) and entry for entry in hosts):
            errors.append(f"{where}.hosts must list inventory groups or hosts (empty: the app host), got {hosts!r}")
    for queue in queues:
        if queue not in consumed:
            errors.append(f"queue {queue!r} in priority_queue_queues has no consumer: no pool in "
                          f"priority_queue_pools lists it, so its messages would wait forever")
    return errors


def option_errors(longest_task_seconds, legacy_queues, queues):
    """Problems with the options the topology's timing and its old queues rest on, each naming its
    variable; empty when sound. A string of digits counts (extra vars from the command line)."""
    errors = []
    longest = longest_task_seconds
    if isinstance(longest, str) and longest.strip().isdigit():
        longest = int(longest)
    if not _is_positive_int(longest):
        errors.append(f"priority_queue_longest_task_seconds must be a whole number of seconds above 0 (the "
                      f"pools' stop grace and the broker's visibility timeout exceed it), got {longest_task_seconds!r}")
    if not isinstance(legacy_queues, list) or not all(isinstance(queue, str) for queue in legacy_queues):
        errors.append(f"priority_queue_legacy_queues must list queue names, got {legacy_queues!r}")
        legacy_queues = []
    for queue in legacy_queues:
        if queue in (queues or []):
            errors.append(f"priority_queue_legacy_queues lists {queue!r}, which is also one of priority_queue_queues: "
                          f"a legacy queue is one the topology no longer uses (its messages move to the default "
                          f"queue); take it out of one of them")
    return errors


def _placement(pool, groups, app_host):
    """The inventory hosts a pool runs on: the app host, or every host of the groups (or the hosts)
    its `hosts` names."""
    names = pool.get("hosts") or []
    if not names:
        return [app_host]
    found = []
    for name in names:
        for host in groups.get(name, [name] if name in groups.get("all", []) else []):
            if host not in found:
                found.append(host)
    return found


def placement_errors(pools, groups, app_host, play_hosts):
    """Pools placed where the play cannot put them, each naming the pool and the inventory entry."""
    errors = []
    play_hosts = list(play_hosts or [])
    if app_host not in play_hosts:
        errors.append(f"priority_queue_app_host {app_host!r} is not a host of this play ({', '.join(play_hosts)}); "
                      f"the app's compose project runs there")
    for pool in pools:
        where = f"priority_queue_pools[{pool.get('name')!r}].hosts"
        for name in pool.get("hosts") or []:
            if not _placement(dict(hosts=[name]), groups, app_host):
                errors.append(f"{where}: {name!r} is neither a group with hosts nor a host of the inventory")
        outside = [host for host in _placement(pool, groups, app_host) if host not in play_hosts]
        if outside and pool.get("hosts"):
            errors.append(f"{where} places it on {', '.join(outside)}, not in this play ({', '.join(play_hosts)}); "
                          f"add them to the play's group (compose_hosts, or priority_queue_hosts)")
    return errors


def pools_on_host(pools, host, groups, app_host):
    """The pools this host runs, each with its replicas on this host."""
    return [pool for pool in pools if host in _placement(pool, groups, app_host)]


def placed_pools(pools, groups, app_host):
    """Each pool across the hosts it runs on: `hosts` resolved to inventory hosts and `replicas` the
    count over all of them, which is what the broker sees."""
    placed = []
    for pool in pools:
        hosts = _placement(pool, groups, app_host)
        placed.append(dict(pool, hosts=hosts, replicas=int(pool.get("replicas", 1)) * len(hosts)))
    return placed


DOCKER_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b)\s*$", re.IGNORECASE)
DOCKER_UNITS = {"b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4,
                "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}


def memory_in_use_mb(usages):
    """MiB in use by containers, from `docker stats` MemUsage values ("136.6MiB / 512MiB")."""
    total = 0
    for usage in usages or []:
        match = DOCKER_SIZE.match(str(usage).split("/", 1)[0])
        if match:
            total += float(match.group(1)) * DOCKER_UNITS[match.group(2).lower()]
    return round(total / 1048576)


def memory_shortfall_mb(pools, available_mb, workers_in_use_mb=0):
    """MiB the pools' limits exceed what the host could give them, 0 when they fit. The workers
    running now are replaced (or kept) by the deploy, so the memory they use counts as theirs."""
    needed = pool_memory_bytes(pools) / 1048576
    return max(0, round(needed - int(available_mb) - int(workers_in_use_mb)))


def pick(mapping, keys):
    """The mapping with only these keys (those it has)."""
    return {key: mapping[key] for key in keys if key in mapping}


def pool_memory_bytes(pools):
    """Memory the pools may take together: each limit times its replicas."""
    return sum((memory_bytes(pool.get("memory")) or 0) * int(pool.get("replicas", 1)) for pool in pools)


class FilterModule:
    def filters(self):
        return {
            "effective_pools": effective_pools,
            "placement_errors": placement_errors,
            "pools_on_host": pools_on_host,
            "placed_pools": placed_pools,
            "scale_phases": scale_phases,
            "topology_errors": topology_errors,
            "option_errors": option_errors,
            "pool_memory_bytes": pool_memory_bytes,
            "pick": pick,
            "memory_bytes": memory_bytes,
            "memory_in_use_mb": memory_in_use_mb,
            "memory_shortfall_mb": memory_shortfall_mb,
        }
