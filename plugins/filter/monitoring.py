# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Monitoring's checks and derived values: the queue check's thresholds."""

from __future__ import annotations

THRESHOLD_KINDS = ("max_messages", "max_age_seconds", "min_consumers")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def queue_check_errors(thresholds, queues):
    """Problems with priority_queue_queue_check_thresholds, each naming it; empty when sound."""
    variable = "priority_queue_queue_check_thresholds"
    if not isinstance(thresholds, dict):
        return [f"{variable} must map queue names to limits, got {thresholds!r}"]
    errors = []
    for queue, limits in thresholds.items():
        where = f"{variable}[{queue!r}]"
        if queue not in queues:
            errors.append(f"{where}: {queue!r} is not a queue of the topology ({', '.join(queues)})")
        if not isinstance(limits, dict) or set(limits) - set(THRESHOLD_KINDS):
            errors.append(f"{where} may set {', '.join(THRESHOLD_KINDS)}; got {limits!r}")
            continue
        for kind, value in limits.items():
            whole = kind != "max_age_seconds"
            if not _number(value) or (whole and not isinstance(value, int)):
                errors.append(f"{where}.{kind} must be a {'whole ' if whole else ''}number not below 0, "
                              f"got {value!r}")
    return errors


def queue_check_thresholds(queues, thresholds):
    """Every queue of the topology needs at least one consumer; the operator's limits on top."""
    merged = {queue: {"min_consumers": 1} for queue in queues}
    for queue, limits in (thresholds or {}).items():
        merged[queue] = dict(merged.get(queue, {}), **limits)
    return merged


class FilterModule:
    def filters(self):
        return {
            "queue_check_errors": queue_check_errors,
            "queue_check_thresholds": queue_check_thresholds,
        }
