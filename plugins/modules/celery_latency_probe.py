#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: celery_latency_probe
short_description: Measure how long a message waits on a Celery queue before a worker takes it
version_added: 0.1.0
description:
  - Publishes probe messages of Celery's builtin task C(celery.accumulate), which every Celery app has, to a
    queue on a Redis broker, one after another, and times each until a worker takes it off the queue (the
    pickup latency). No app code is needed.
  - With O(result_backend_url), also times each probe until its result is stored (done), and deletes the
    results afterwards. Without it, probes ask the worker to store no result, so nothing is left behind even
    where the app has a result backend.
  - Returns every sample with p50, p95, p99 and max. Optionally fails when a percentile is above a threshold.
  - The number of probes and the total time are bounded. A probe no worker takes within O(probe_timeout) is
    removed from the queue again, and the module fails saying so.
author:
  - pilito developers (@pilito)
extends_documentation_fragment:
  - pilito.priority_queue.attributes
  - pilito.priority_queue.broker
attributes:
  check_mode:
    support: partial
    details: In check mode no probe is sent and no figures are returned.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Probes are removed or consumed; nothing is left changed.
options:
  queue:
    description: The queue to probe.
    type: str
    required: true
  count:
    description: Number of probes, sent one after another (1 to 10000).
    type: int
    default: 10
  interval:
    description: Seconds between one probe's pickup and the next probe.
    type: float
    default: 0.05
  probe_timeout:
    description: Seconds a single probe may wait for a worker before it is withdrawn and the module fails.
    type: float
    default: 30
  max_seconds:
    description: Upper bound on the whole run; no new probe is sent after it.
    type: float
    default: 300
  poll_interval:
    description:
      - Seconds between the first checks whether a probe was taken, the finest resolution of the measurement.
      - The interval grows with the time the probe has waited (5% of it, at most 50 ms), so a probe that waits
        long scans the broker's list twenty times a second at most, not thousands.
    type: float
    default: 0.001
  result_backend_url:
    description:
      - The app's Redis result backend (Celery's C(result_backend)), to time probes until done. Only
        V(redis://) and V(rediss://) backends are read. May hold a password; never logged.
    type: str
  threshold_seconds:
    description: Fail when O(threshold_percentile) of the pickup latency is above this many seconds.
    type: float
  threshold_percentile:
    description: Which figure O(threshold_seconds) applies to.
    type: str
    default: p95
    choices: [p50, p95, p99, max]
"""

EXAMPLES = r"""
- name: Hold AI chat pickup latency under 1 s while crawls are queued
  pilito.priority_queue.celery_latency_probe:
    broker_url: "{{ vault_celery_broker_url }}"
    queue: high_priority
    count: 20
    threshold_seconds: 1.0
    threshold_percentile: p99
  register: latency

- name: Report it
  ansible.builtin.debug:
    msg: "p50 {{ latency.pickup.p50 }} s, p99 {{ latency.pickup.p99 }} s"
"""

RETURN = r"""
pickup:
  description: Seconds from publishing each probe until a worker took it off the queue.
  returned: success, or when the threshold is exceeded
  type: dict
  contains:
    samples:
      description: Every probe's latency, in order.
      type: list
      elements: float
    p50:
      description: Median.
      type: float
    p95:
      description: 95th percentile (nearest rank).
      type: float
    p99:
      description: 99th percentile (nearest rank).
      type: float
    max:
      description: Largest sample.
      type: float
  sample: {"samples": [0.0021, 0.0018], "p50": 0.0018, "p95": 0.0021, "p99": 0.0021, "max": 0.0021}
done:
  description: Seconds from publishing until the probe's result was stored; only with O(result_backend_url).
  returned: when O(result_backend_url) is set
  type: dict
  sample: {"samples": [0.004, 0.003], "p50": 0.003, "p95": 0.004, "p99": 0.004, "max": 0.004}
queue:
  description: The queue probed.
  returned: always
  type: str
  sample: high_priority
broker:
  description: The broker, described without its password.
  returned: always
  type: str
  sample: "127.0.0.1:6379 (redis, db 0)"
"""

import json
import math
import time
import uuid

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import (
    BrokerError,
    broker_argument_spec,
    connect,
    parse_broker_url,
    probe_message,
    queue_key,
    wake_up,
)

MAX_COUNT = 10000


def percentile(samples, fraction):
    """Nearest-rank percentile: the smallest sample with at least this fraction at or below it."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarise(samples):
    return dict(samples=[round(s, 6) for s in samples], p50=round(percentile(samples, 0.50), 6),
                p95=round(percentile(samples, 0.95), 6), p99=round(percentile(samples, 0.99), 6),
                max=round(max(samples), 6))


def result_client(url, timeout):
    import redis  # only reached after connect() checked that redis imports

    target = parse_broker_url(url)
    if target.scheme == "sentinel":
        raise BrokerError("result_backend_url: only redis:// and rediss:// result backends are supported")
    host, port = target.hosts[0]
    return redis.Redis(host=host, port=port, db=target.db, username=target.username, password=target.password,
                       ssl=target.ssl, socket_timeout=timeout, socket_connect_timeout=timeout)


MAX_POLL_SECONDS = 0.05


def poll_pause(poll_interval, waited):
    """Seconds to wait before the next check: fine at first, coarser the longer a probe waits."""
    return min(max(poll_interval, waited * 0.05), max(poll_interval, MAX_POLL_SECONDS))


def probe_once(client, key, queue, probe_timeout, poll_interval, results=None, prefix=""):
    """Publish one probe; return (pickup seconds, done seconds or None), or None if no worker took it."""
    task_id = f"pilito-probe-{uuid.uuid4()}"
    payload = json.dumps(probe_message(queue, task_id, str(uuid.uuid4()), origin="pilito-latency-probe",
                                       ignore_result=results is None))
    started = time.monotonic()
    with client.pipeline() as pipe:
        wake_up(pipe.lpush(key, payload), queue, prefix).execute()
    deadline = started + probe_timeout
    while client.lpos(key, payload) is not None:
        if time.monotonic() > deadline:
            if client.lrem(key, 1, payload):
                return None
            break  # taken in the very last moment
        time.sleep(poll_pause(poll_interval, time.monotonic() - started))
    pickup = time.monotonic() - started
    done = None
    if results is not None:
        meta_key = f"celery-task-meta-{task_id}"
        while time.monotonic() < deadline:
            meta = results.get(meta_key)
            if meta and json.loads(meta).get("status") in ("SUCCESS", "FAILURE"):
                done = time.monotonic() - started
                break
            time.sleep(poll_pause(poll_interval, time.monotonic() - started))
        results.delete(meta_key)
    return pickup, done


def main():
    argument_spec = broker_argument_spec()
    argument_spec.update(
        queue=dict(type="str", required=True),
        count=dict(type="int", default=10),
        interval=dict(type="float", default=0.05),
        probe_timeout=dict(type="float", default=30),
        max_seconds=dict(type="float", default=300),
        poll_interval=dict(type="float", default=0.001),
        result_backend_url=dict(type="str", no_log=True),
        threshold_seconds=dict(type="float"),
        threshold_percentile=dict(type="str", default="p95", choices=["p50", "p95", "p99", "max"]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if not 1 <= params["count"] <= MAX_COUNT:
        module.fail_json(msg=f"count must be between 1 and {MAX_COUNT}, got {params['count']}")
    for name in ("interval", "probe_timeout", "max_seconds", "poll_interval"):
        if params[name] < 0 or (name in ("probe_timeout", "max_seconds", "poll_interval") and params[name] == 0):
            module.fail_json(msg=f"{name} must be a positive number of seconds, got {params[name]}")

    target, client = connect(module)
    report = dict(changed=False, queue=params["queue"], broker=target.describe())
    if module.check_mode:
        module.exit_json(msg="check mode: no probe sent", **report)
    results = None
    if params["result_backend_url"]:
        try:
            results = result_client(params["result_backend_url"], params["broker_timeout"])
            results.ping()
        except BrokerError as exc:
            module.fail_json(msg=str(exc), **report)
        except Exception as exc:  # redis errors; the URL itself is never part of the message
            module.fail_json(msg=f"cannot read the result backend: {type(exc).__name__}", **report)

    key = queue_key(params["queue"], 0, params["broker_key_prefix"])
    pickups, dones = [], []
    stop_at = time.monotonic() + params["max_seconds"]
    for n in range(params["count"]):
        if n and time.monotonic() + params["interval"] > stop_at:
            module.warn(f"max_seconds reached after {n} of {params['count']} probes")
            break
        if n:
            time.sleep(params["interval"])
        sample = probe_once(client, key, params["queue"], params["probe_timeout"], params["poll_interval"], results,
                            params["broker_key_prefix"])
        if sample is None:
            module.fail_json(msg=f"probe {n + 1} waited {params['probe_timeout']} s on queue {params['queue']!r} and "
                                 f"no worker took it; it was withdrawn. Does any worker consume this queue?",
                             pickup=summarise(pickups) if pickups else None, **report)
        pickups.append(sample[0])
        if sample[1] is not None:
            dones.append(sample[1])
    report["pickup"] = summarise(pickups)
    if results is not None:
        report["done"] = summarise(dones) if dones else None
        if len(dones) < len(pickups):
            module.warn(f"{len(pickups) - len(dones)} probes were taken but stored no result within probe_timeout")
    threshold = params["threshold_seconds"]
    if threshold is not None:
        figure = report["pickup"][params["threshold_percentile"]]
        if figure > threshold:
            module.fail_json(msg=f"pickup latency {params['threshold_percentile']} on queue {params['queue']} is "
                                 f"{figure:.4f} s, above the threshold of {threshold} s "
                                 f"(p50 {report['pickup']['p50']:.4f} s, max {report['pickup']['max']:.4f} s, "
                                 f"{len(pickups)} probes)", **report)
    module.exit_json(**report)


if __name__ == "__main__":
    main()
