#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: celery_queue_check
short_description: Check Celery queues on a Redis broker against thresholds, and write them as Prometheus metrics
version_added: 0.1.0
description:
  - For each queue - its waiting messages on every priority list, the messages workers reserved and have not
    acknowledged (kombu's C(unacked) hash), the workers that consume it, and how long the message next in line
    has waited - compared with thresholds per queue. Fails with one line per breach.
  - A queue holding messages that no worker consumes is always a breach, since they would wait forever.
  - Meant to run every minute from a scheduler. The lists are read in one round trip whatever their length;
    the workers are asked once, for O(workers_timeout) seconds.
  - First, unless O(put_back_dead_workers) is false, puts back on its queue each message held by a worker that
    has been silent for O(dead_after_seconds) (the rendered C(celery_priority) config's record of who holds
    what), as the workers' own watch does, for when every worker of a topology is dead and nothing else would before
    the visibility timeout. Their tasks run again (late acks), counted in C(redelivered).
  - With O(textfile), writes the same figures for node_exporter's textfile collector, whether or not a
    threshold was breached. Writing the file is a report, not a change; only messages put back are.
author:
  - pilito developers (@pilito)
extends_documentation_fragment:
  - pilito.priority_queue.attributes
  - pilito.priority_queue.broker
attributes:
  check_mode:
    support: full
    details: Measures the same in check mode, says what it would put back, puts back nothing and does not write
      O(textfile).
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Changes nothing on the workers; on the broker, only puts back what dead workers held, which a second
      run finds nothing of.
options:
  queues:
    description:
      - Names of the queues to check.
    type: list
    elements: str
    required: true
  thresholds:
    description:
      - Queue name -> its limits, any of C(max_messages) (most messages, waiting and reserved, it may hold),
        C(max_age_seconds) (longest the message next in line may have waited since it was sent) and
        C(min_consumers) (fewest workers that must consume it).
      - Only messages stamped by the rendered C(celery_priority) config say when they were sent; a queue whose
        next messages carry no stamp is not held to C(max_age_seconds), and its age is reported as unknown.
      - A queue not named here is only held to the rule that messages need a consumer.
    type: dict
    default: {}
  consumers:
    description:
      - Ask the workers which queues they consume (remote control over the broker), to count each queue's
        consumers. Off, consumers are not counted and no C(min_consumers) threshold may be set.
    type: bool
    default: true
  workers_timeout:
    description:
      - Seconds to collect the workers' answers. Every worker that answers within it is counted.
    type: float
    default: 1.0
  put_back_dead_workers:
    description:
      - Put back what workers silent for O(dead_after_seconds) held. Judged only on a broker up for twice that
        long, so that workers have been heard again after a broker restart.
    type: bool
    default: true
  dead_after_seconds:
    description:
      - Seconds of silence after which a worker is dead. The rendered config's workers use 20.
    type: float
    default: 20
  textfile:
    description:
      - Path of a Prometheus text-format file to write the figures to, for node_exporter's textfile collector
        (C(--collector.textfile.directory)). Written to a temporary file in the same directory and renamed, so
        the collector never reads half a file. Its directory must exist. Mode 0644.
    type: path
notes:
  - "Metrics in O(textfile), all gauges in base units, labelled with C(queue):
    C(priority_queue_queue_waiting_messages) (also labelled C(priority), the priority step),
    C(priority_queue_queue_reserved_messages), C(priority_queue_queue_messages) (waiting and reserved),
    C(priority_queue_queue_consumers), C(priority_queue_queue_oldest_message_age_seconds) (queues whose age is
    known), C(priority_queue_queue_breaches)."
  - "Metrics in O(textfile) without labels: C(priority_queue_check_breaches),
    C(priority_queue_check_duration_seconds), C(priority_queue_check_last_success_timestamp_seconds) (alert when it
    grows old: the check stopped running)."
  - C(redis-cli LLEN <queue>) and exporters that read one list per queue miss the priority lists and every
    reserved message; this module counts both.
requirements:
  - celery (Python library), when O(consumers) is true
"""

EXAMPLES = r"""
- name: Check the queues, and fail with one line per breach
  pilito.priority_queue.celery_queue_check:
    broker_url: "{{ vault_celery_broker_url }}"
    queues: [high_priority, default, low_priority]
    thresholds:
      high_priority: {max_messages: 50, max_age_seconds: 30, min_consumers: 2}
      low_priority: {max_messages: 10000}
    textfile: /var/lib/node_exporter/textfile_collector/priority_queue.prom
  register: queue_check

- name: Show each queue's consumers
  ansible.builtin.debug:
    msg: "{{ queue_check.queues | dict2items | map(attribute='value.consumers') }}"
"""

RETURN = r"""
queues:
  description: The figures of each queue, keyed by its name.
  returned: success or when a threshold is breached
  type: dict
  contains:
    total:
      description: Waiting plus reserved messages.
      type: int
    waiting:
      description: Messages on the queue's lists, all priority steps.
      type: int
    by_priority:
      description: Waiting messages per priority step (keys are the steps as strings).
      type: dict
    unacked:
      description: Messages reserved by workers and not yet acknowledged.
      type: int
    consumers:
      description: Workers that consume the queue; V(null) when O(consumers) is false.
      type: int
    oldest_age_seconds:
      description: How long the message next in line has waited; V(null) when unknown or the queue is empty.
      type: float
    known:
      description: Whether the queue has messages or a kombu binding on this broker.
      type: bool
    redelivered:
      description:
        - Messages of dead workers the workers put back on the queue, counted since the broker's data began
          (the rendered config's watch for dead workers, Redis hash C(priority_queue.redelivered)). Their tasks
          ran again; none is lost.
      type: int
  sample:
    high_priority: {"total": 3, "waiting": 1, "by_priority": {"0": 1, "3": 0, "6": 0, "9": 0}, "unacked": 2,
                    "consumers": 2, "oldest_age_seconds": 0.4, "known": true, "redelivered": 0}
put_back:
  description: Queue -> messages of dead workers put back on it in this run (in check mode, that it would put back).
  returned: always
  type: dict
  sample: {"default": 2}
breaches:
  description: One line per breach, naming the queue, the figure and the limit.
  returned: always
  type: list
  elements: str
  sample: ["queue low_priority: 14 messages wait and no worker consumes it"]
workers:
  description: Each worker that answered, with the queues it consumes; empty when O(consumers) is false.
  returned: success or when a threshold is breached
  type: dict
  sample: {"celery_ai@6f1c2a": ["high_priority"]}
textfile:
  description: The metrics file written, or V(null) (none asked for, or check mode).
  returned: always
  type: str
duration_seconds:
  description: How long the measurement took.
  returned: success or when a threshold is breached
  type: float
broker:
  description: The broker checked, password masked.
  returned: always
  type: str
  sample: "127.0.0.1:6379 (redis, db 0)"
"""

import os
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import (
    DEAD_AFTER_SECONDS,
    REDELIVERED_KEY,
    broker_argument_spec,
    connect,
    measure,
    put_back_dead,
)
from ansible_collections.pilito.priority_queue.plugins.module_utils.workers import (
    active_queues,
    control_app,
    safe_error,
)

THRESHOLD_KINDS = ("max_messages", "max_age_seconds", "min_consumers")


def consumers_per_queue(workers, queues):
    """How many of the workers consume each queue."""
    return {queue: sum(1 for consumed in workers.values() if queue in consumed) for queue in queues}


def breaches(figures, thresholds):
    """One line per breach: messages nobody consumes, then each threshold a queue exceeds."""
    lines = []
    for queue, figure in figures.items():
        limits = thresholds.get(queue) or {}
        consumers, age = figure.get("consumers"), figure.get("oldest_age_seconds")
        if consumers == 0 and figure["total"] > 0:
            lines.append(f"queue {queue}: {figure['total']} messages wait and no worker consumes it")
        elif limits.get("min_consumers") is not None and consumers is not None and consumers < limits["min_consumers"]:
            lines.append(f"queue {queue}: {consumers} workers consume it, fewer than min_consumers "
                         f"{limits['min_consumers']}")
        if limits.get("max_messages") is not None and figure["total"] > limits["max_messages"]:
            lines.append(f"queue {queue}: {figure['total']} messages ({figure['waiting']} waiting, "
                         f"{figure['unacked']} reserved), above max_messages {limits['max_messages']}")
        if limits.get("max_age_seconds") is not None and age is not None and age > limits["max_age_seconds"]:
            lines.append(f"queue {queue}: the message next in line has waited {age:.1f} s, above "
                         f"max_age_seconds {limits['max_age_seconds']:g}")
    return lines


def _label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics_text(figures, breach_lines, duration, finished_at):
    """The figures in Prometheus' text format (gauges, base units)."""
    families = [
        ("priority_queue_queue_waiting_messages", "Messages waiting on the queue, by priority step.",
         [({"queue": q, "priority": step}, count) for q, f in figures.items() for step, count in f["by_priority"].items()]),
        ("priority_queue_queue_reserved_messages", "Messages reserved by workers and not yet acknowledged.",
         [({"queue": q}, f["unacked"]) for q, f in figures.items()]),
        ("priority_queue_queue_messages", "Messages of the queue: waiting on every priority step, and reserved.",
         [({"queue": q}, f["total"]) for q, f in figures.items()]),
        ("priority_queue_queue_consumers", "Workers that consume the queue.",
         [({"queue": q}, f["consumers"]) for q, f in figures.items() if f.get("consumers") is not None]),
        ("priority_queue_queue_oldest_message_age_seconds", "How long the message next in line has waited.",
         [({"queue": q}, f["oldest_age_seconds"]) for q, f in figures.items()
          if f.get("oldest_age_seconds") is not None]),
        ("priority_queue_queue_redelivered_messages", "Messages of dead workers put back on the queue (they ran again).",
         [({"queue": q}, f.get("redelivered", 0)) for q, f in figures.items()]),
        ("priority_queue_queue_breaches", "Thresholds the queue breaches now.",
         [({"queue": q}, sum(1 for line in breach_lines if line.startswith(f"queue {q}:"))) for q in figures]),
        ("priority_queue_check_breaches", "Thresholds breached in the last check.", [({}, len(breach_lines))]),
        ("priority_queue_check_duration_seconds", "How long the last check took.", [({}, round(duration, 3))]),
        ("priority_queue_check_last_success_timestamp_seconds", "When the last check finished (Unix time).",
         [({}, round(finished_at, 3))]),
    ]
    lines = []
    for name, help_text, samples in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for labels, value in samples:
            label_text = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
            lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")
    return "\n".join(lines) + "\n"


def write_atomically(path, text):
    """Write beside the target and rename over it; the temporary name does not end in .prom, which
    node_exporter would read."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".priority_queue.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def checked_thresholds(module, queues):
    thresholds = {}
    for name, limits in module.params["thresholds"].items():
        where = f"thresholds.{name}"
        if name not in queues:
            module.fail_json(msg=f"{where}: queue {name!r} is not in queues {queues}")
        if not isinstance(limits, dict) or set(limits) - set(THRESHOLD_KINDS):
            module.fail_json(msg=f"{where} may set {', '.join(THRESHOLD_KINDS)}; got {limits!r}")
        checked = {}
        for kind, value in limits.items():
            if value is None:
                continue
            try:
                checked[kind] = float(value) if kind == "max_age_seconds" else int(value)
            except (TypeError, ValueError):
                module.fail_json(msg=f"{where}.{kind} must be a number, got {value!r}")
            if checked[kind] < 0 or isinstance(value, bool):
                module.fail_json(msg=f"{where}.{kind} must be a number not below 0, got {value!r}")
        if "min_consumers" in checked and not module.params["consumers"]:
            module.fail_json(msg=f"{where}.min_consumers needs consumers: true")
        thresholds[name] = checked
    return thresholds


def main():
    argument_spec = broker_argument_spec()
    argument_spec.update(
        queues=dict(type="list", elements="str", required=True),
        thresholds=dict(type="dict", default={}),
        consumers=dict(type="bool", default=True),
        workers_timeout=dict(type="float", default=1.0),
        put_back_dead_workers=dict(type="bool", default=True),
        dead_after_seconds=dict(type="float", default=DEAD_AFTER_SECONDS),
        textfile=dict(type="path"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    queues = params["queues"]
    if not queues or any(not name for name in queues) or len(set(queues)) != len(queues):
        module.fail_json(msg=f"queues must name at least one queue, each once and none empty; got {queues}")
    if params["workers_timeout"] <= 0:
        module.fail_json(msg=f"workers_timeout must be positive, got {params['workers_timeout']}")
    if params["dead_after_seconds"] <= 0:
        module.fail_json(msg=f"dead_after_seconds must be positive, got {params['dead_after_seconds']}")
    thresholds = checked_thresholds(module, queues)
    textfile = params["textfile"]
    if textfile and not os.path.isdir(os.path.dirname(os.path.abspath(textfile))):
        module.fail_json(msg=f"textfile: the directory of {textfile} does not exist")

    started = time.monotonic()
    target, client = connect(module)
    report = dict(changed=False, broker=target.describe(), breaches=[], textfile=None, put_back={})
    if params["put_back_dead_workers"]:
        try:
            put_back, not_judged = put_back_dead(client, queues, params["priority_steps"], params["broker_key_prefix"],
                                                 params["dead_after_seconds"], module.check_mode)
        except Exception as exc:  # redis errors; INFO or EVAL refused by the server
            module.fail_json(msg=f"cannot put back what dead workers held: {safe_error(exc, target)}", **report)
        if not_judged:
            module.warn(f"dead workers not judged: {not_judged}")
        report.update(put_back=put_back, changed=bool(put_back))
    figures = measure(client, queues, params["priority_steps"], params["broker_key_prefix"])
    redelivered = client.hgetall(params["broker_key_prefix"] + REDELIVERED_KEY)
    for queue, figure in figures.items():
        figure["redelivered"] = int(redelivered.get(queue.encode(), 0))
    workers = {}
    if params["consumers"]:
        try:
            workers = active_queues(control_app(module, target), params["workers_timeout"])
        except Exception as exc:  # kombu and redis errors alike
            module.fail_json(msg=f"cannot ask the workers through the broker at {target.describe()}: "
                                 f"{safe_error(exc, target)}", **report)
        for queue, count in consumers_per_queue(workers, queues).items():
            figures[queue]["consumers"] = count
    else:
        for figure in figures.values():
            figure["consumers"] = None
    breach_lines = breaches(figures, thresholds)
    duration = time.monotonic() - started
    report.update(queues=figures, workers=workers, breaches=breach_lines, duration_seconds=round(duration, 3))
    if textfile and not module.check_mode:
        try:
            write_atomically(textfile, metrics_text(figures, breach_lines, duration, time.time()))
        except OSError as exc:
            module.fail_json(msg=f"textfile: cannot write {textfile}: {exc}", **report)
        report["textfile"] = textfile
    if breach_lines:
        module.fail_json(msg="\n".join(breach_lines), **report)
    module.exit_json(**report)


if __name__ == "__main__":
    main()
