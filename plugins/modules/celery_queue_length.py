#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: celery_queue_length
short_description: Lengths of Celery queues on a Redis broker, priority levels and reserved messages included
version_added: 0.1.0
description:
  - Counts the messages of each named Celery queue on a Redis broker the way kombu's Redis transport stores
    them, so nothing is undercounted.
  - A queue's waiting messages are spread over one Redis list per priority step (V(high_priority) and
    C(high_priority\x06\x163), ...). Messages that a worker has reserved but not yet acknowledged sit in the
    C(unacked) hash; they are attributed to a queue by their routing key (Celery's default routing key is the
    queue name).
  - Optionally fails when a queue holds more messages than its threshold. Read-only.
author:
  - pilito developers (@pilito)
extends_documentation_fragment:
  - pilito.priority_queue.attributes
  - pilito.priority_queue.broker
attributes:
  check_mode:
    support: full
    details: The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Never changes anything.
options:
  queues:
    description:
      - Names of the queues to measure.
    type: list
    elements: str
    required: true
  thresholds:
    description:
      - Largest acceptable total length per queue name. A queue above its threshold fails the task, with a
        message naming the queue, its length and the threshold, and the measurements still returned.
      - Queues not named here have no threshold.
    type: dict
    default: {}
  count_unacked:
    description:
      - Also count messages reserved by workers but not acknowledged (the C(unacked) hash).
      - Turn off on brokers where that hash is very large and only waiting messages matter.
    type: bool
    default: true
notes:
  - A queue with no messages has no Redis list at all. A queue with no messages and no kombu binding is
    reported with length 0, RV(queues.name.known=false) and a warning, since its name may be wrong.
"""

EXAMPLES = r"""
- name: Measure the priority queues
  pilito.priority_queue.celery_queue_length:
    broker_url: redis://127.0.0.1:6379/0
    queues: [high_priority, default, low_priority]
  register: queue_lengths

- name: Fail when AI chat work piles up (a scheduler can run this every minute)
  pilito.priority_queue.celery_queue_length:
    broker_url: "{{ vault_celery_broker_url }}"
    queues: [high_priority, low_priority]
    thresholds:
      high_priority: 20
      low_priority: 5000

- name: Show the length of the high-priority queue
  ansible.builtin.debug:
    msg: "{{ queue_lengths.queues.high_priority.total }} messages"
"""

RETURN = r"""
queues:
  description: Measurements per queue name.
  returned: success or when a threshold is exceeded
  type: dict
  contains:
    name:
      description: One entry per queue in O(queues), keyed by its name.
      type: dict
      contains:
        total:
          description: Waiting plus unacknowledged messages.
          type: int
          sample: 1012
        waiting:
          description: Messages in the queue's lists, all priority levels.
          type: int
          sample: 1000
        by_priority:
          description: Waiting messages per priority step (keys are the steps as strings).
          type: dict
          sample: {"0": 990, "3": 0, "6": 10, "9": 0}
        unacked:
          description: Messages reserved by workers and not yet acknowledged, by routing key.
          type: int
          sample: 12
        known:
          description: Whether the queue has messages or a kombu binding on this broker.
          type: bool
          sample: true
        oldest_age_seconds:
          description:
            - How long the message next in line (on any priority list) has waited since it was sent, in seconds.
            - Read from the C(pilito_sent_at) header that the rendered C(celery_priority) config stamps on what
              producers send; V(null) when the queue is empty or its next messages carry no such header
              (sent by a producer that does not load the config).
          type: float
          sample: 12.5
  sample:
    high_priority: {"total": 2, "waiting": 0, "by_priority": {"0": 0, "3": 0, "6": 0, "9": 0}, "unacked": 2,
                    "known": true, "oldest_age_seconds": null}
total:
  description: Sum of RV(queues.name.total) over all queues measured.
  returned: success or when a threshold is exceeded
  type: int
  sample: 1014
exceeded:
  description: Queues above their threshold, with their length and threshold.
  returned: always
  type: list
  elements: dict
  sample: [{"queue": "high_priority", "total": 31, "threshold": 20}]
broker:
  description: The broker measured, password masked.
  returned: always
  type: str
  sample: "127.0.0.1:6379 (redis, db 0)"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import (
    broker_argument_spec,
    connect,
    measure,
)


def over_threshold(result, thresholds):
    return [dict(queue=queue, total=result[queue]["total"], threshold=limit)
            for queue, limit in thresholds.items() if queue in result and result[queue]["total"] > limit]


def main():
    argument_spec = broker_argument_spec()
    argument_spec.update(
        queues=dict(type="list", elements="str", required=True),
        thresholds=dict(type="dict", default={}),
        count_unacked=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    queues = module.params["queues"]
    if not queues or any(not name for name in queues):
        module.fail_json(msg="queues must name at least one queue, and no name may be empty")
    if len(set(queues)) != len(queues):
        module.fail_json(msg=f"queues lists a name twice: {queues}")
    thresholds = {}
    for name, limit in module.params["thresholds"].items():
        if name not in queues:
            module.fail_json(msg=f"thresholds names queue {name!r}, which is not in queues {queues}")
        try:
            if isinstance(limit, bool) or (isinstance(limit, float) and not limit.is_integer()):
                raise ValueError(limit)  # int() would take True as 1 and cut 2.5 to 2
            thresholds[name] = int(limit)
        except (TypeError, ValueError):
            module.fail_json(msg=f"thresholds.{name} must be a whole number, got {limit!r}")
        if thresholds[name] < 0:
            module.fail_json(msg=f"thresholds.{name} must not be negative, got {limit!r}")

    target, client = connect(module)
    result = measure(client, queues, module.params["priority_steps"], module.params["broker_key_prefix"],
                     module.params["count_unacked"])
    for queue, lengths in result.items():
        if not lengths["known"]:
            module.warn(f"queue {queue!r} has no messages and no kombu binding on {target.describe()}: "
                        f"reported as 0; check the name")
    exceeded = over_threshold(result, thresholds)
    report = dict(changed=False, queues=result, total=sum(q["total"] for q in result.values()),
                  exceeded=exceeded, broker=target.describe())
    if exceeded:
        module.fail_json(msg="; ".join(f"queue {e['queue']} holds {e['total']} messages, above its threshold "
                                       f"of {e['threshold']}" for e in exceeded), **report)
    module.exit_json(**report)


if __name__ == "__main__":
    main()
