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


def effective_pools(pools, phases, phase):
    """Each pool with its scale phase preset applied, as a list sorted by name."""
    preset = (phases or {}).get(phase, (phases or {}).get(str(phase), {})) or {}
    result = []
    for name in sorted(pools or {}):
        pool = dict(name=name, replicas=1, autoscale="")
        pool.update(pools[name] or {})
        pool.update(preset.get(name, {}) or {})
        result.append(pool)
    return result


def _is_positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def topology_errors(queues, default_queue, routes, rate_limits, pools, phases, phase):
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
    for pattern, queue in (routes or {}).items():
        if queue not in queues:
            errors.append(f"priority_queue_routes[{pattern!r}] routes to {queue!r}, which is not in "
                          f"priority_queue_queues {queues}")
    for task, limit in (rate_limits or {}).items():
        if not re.match(r"^\d+(\.\d+)?(/[smh])?$", str(limit)):
            errors.append(f"priority_queue_rate_limits[{task!r}] is {limit!r}; use Celery's form, e.g. '30/m'")
    if not pools:
        errors.append("priority_queue_pools must declare at least one worker pool")
    phase_names = [str(name) for name in (phases or {})]
    if str(phase) not in phase_names:
        errors.append(f"priority_queue_scale_phase {phase!r} is not one of priority_queue_scale_phases "
                      f"({', '.join(phase_names)})")
    for preset_phase, preset in (phases or {}).items():
        for name in preset or {}:
            if name not in (pools or {}):
                errors.append(f"priority_queue_scale_phases[{preset_phase}] names pool {name!r}, "
                              f"which is not in priority_queue_pools")
    consumed = set()
    for pool in effective_pools(pools, phases, phase):
        name = pool["name"]
        where = f"priority_queue_pools[{name!r}]"
        if not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", name):
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
    for queue in queues:
        if queue not in consumed:
            errors.append(f"queue {queue!r} in priority_queue_queues has no consumer: no pool in "
                          f"priority_queue_pools lists it, so its messages would wait forever")
    return errors


def pool_memory_bytes(pools):
    """Memory the pools may take together: each limit times its replicas."""
    return sum((memory_bytes(pool.get("memory")) or 0) * int(pool.get("replicas", 1)) for pool in pools)


class FilterModule:
    def filters(self):
        return {
            "effective_pools": effective_pools,
            "topology_errors": topology_errors,
            "pool_memory_bytes": pool_memory_bytes,
            "memory_bytes": memory_bytes,
        }
