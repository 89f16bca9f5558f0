#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: celery_worker_info
short_description: What each Celery worker answers - its queues, stats, running and reserved tasks - per node and pool
version_added: 0.1.0
description:
  - Asks every Celery worker on a Redis broker, by remote control over the broker, which queues it consumes and,
    on request, its stats and its running (active) and reserved tasks. No app code is needed; the app's modules,
    images and producers do not matter.
  - Workers are grouped into pools by node name (C(<pool>@<host>), as the rendered compose services name them).
  - With O(expect), fails unless each expected pool answers with all its replicas and each of its workers consumes
    exactly the pool's queues, naming the pool or worker and what was found. O(wait_seconds) asks again until
    then, for workers that have just started.
author:
  - pilito developers (@pilito)
extends_documentation_fragment:
  - pilito.priority_queue.attributes
  - pilito.priority_queue.broker
attributes:
  check_mode:
    support: full
    details: The module only asks; it runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Never changes anything.
options:
  expect:
    description:
      - Pools that must answer, each with its RV(pools) name, its replicas and its queues.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The pool (compose service) name.
        type: str
        required: true
      replicas:
        description: How many workers of the pool must answer.
        type: int
        default: 1
      queues:
        description: The queues each of its workers must consume (in any order).
        type: list
        elements: str
        required: true
  wait_for:
    description:
      - How many workers must answer at least. Every worker that answers within O(timeout) is reported,
        not only the first this many, since workers on other hosts share the broker and answer too.
      - With O(expect) alone, replies are collected until as many workers answered as its replicas add up to.
    type: int
  timeout:
    description: Seconds to wait for the workers' replies to each question.
    type: float
    default: 5.0
  wait_seconds:
    description: Ask again, once a second, until O(expect) or O(wait_for) is met or this many seconds passed.
    type: float
    default: 0
  details:
    description: What else to ask each worker besides its queues.
    type: list
    elements: str
    choices: [stats, active, reserved]
    default: []
requirements:
  - celery (Python library) on the managed host, for remote control
  - redis (Python library, 4.1 or newer)
"""

EXAMPLES = r"""
- name: Check that each pool answers with all its replicas and consumes exactly its queues
  pilito.priority_queue.celery_worker_info:
    broker_url: "{{ vault_celery_broker_url }}"
    expect:
      - {name: celery_ai, replicas: 1, queues: [high_priority]}
      - {name: celery_worker, replicas: 2, queues: [high_priority, default, low_priority]}
    details: [stats]
  register: workers

- name: Report the processes of every worker
  ansible.builtin.debug:
    msg: "{{ workers.workers | dict2items | map(attribute='value.stats.pool.max-concurrency') }}"
"""

RETURN = r"""
workers:
  description: Node name -> what the worker answered.
  returned: always
  type: dict
  contains:
    pool:
      description: The pool the node name says it belongs to.
      type: str
    queues:
      description: The queues it consumes, in its own order.
      type: list
      elements: str
    stats:
      description: Celery's C(inspect stats), without the broker connection details. With O(details=stats).
      type: dict
    active:
      description: Its running tasks (C(id), C(name), C(time_start)). With O(details=active).
      type: list
      elements: dict
    reserved:
      description: Tasks it has taken but not started (C(id), C(name)). With O(details=reserved).
      type: list
      elements: dict
  sample: {"celery_ai@a1b2": {"pool": "celery_ai", "queues": ["high_priority"]}}
pools:
  description: Pool name -> its workers' node names.
  returned: always
  type: dict
  sample: {"celery_ai": ["celery_ai@a1b2"]}
problems:
  description: What does not match O(expect), one line each.
  returned: always
  type: list
  elements: str
broker:
  description: The broker, described without its password.
  returned: always
  type: str
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import broker_argument_spec
from ansible_collections.pilito.priority_queue.plugins.module_utils.workers import (
    active_queues,
    ask,
    pool_of,
    safe_error,
    workers_app,
)

TASK_FIELDS = ("id", "name", "time_start", "hostname", "worker_pid", "acknowledged")


def problems_with(workers, expect):
    """What the workers' answers lack against the expected pools, one line each."""
    problems = []
    for pool in expect:
        nodes = sorted(node for node, worker in workers.items() if worker["pool"] == pool["name"])
        if len(nodes) != pool["replicas"]:
            problems.append(f"pool {pool['name']}: {len(nodes)} of {pool['replicas']} workers answered"
                            + (f" ({', '.join(nodes)})" if nodes else ""))
        for node in nodes:
            if sorted(workers[node]["queues"]) != sorted(pool["queues"]):
                problems.append(f"worker {node} consumes {', '.join(workers[node]['queues']) or 'nothing'}; "
                                f"pool {pool['name']} must consume {', '.join(pool['queues'])}")
    return problems


def trimmed_tasks(tasks):
    return [{key: task.get(key) for key in TASK_FIELDS if key in task} for task in tasks or []]


def main():
    argument_spec = broker_argument_spec()
    argument_spec.update(
        expect=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True),
            replicas=dict(type="int", default=1),
            queues=dict(type="list", elements="str", required=True),
        )),
        wait_for=dict(type="int"),
        timeout=dict(type="float", default=5.0),
        wait_seconds=dict(type="float", default=0),
        details=dict(type="list", elements="str", default=[], choices=["stats", "active", "reserved"]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if params["timeout"] <= 0 or params["wait_seconds"] < 0:
        module.fail_json(msg="timeout must be positive and wait_seconds not negative")
    target, app = workers_app(module)
    report = dict(changed=False, broker=target.describe(), workers={}, pools={}, problems=[])
    expected_count = params["wait_for"]
    if expected_count is None and params["expect"]:
        expected_count = sum(pool["replicas"] for pool in params["expect"])
    # The pools expected are every worker there is; wait_for may count one host's, and others answer too.
    limit = expected_count if params["wait_for"] is None else None
    deadline = time.monotonic() + params["wait_seconds"]
    try:
        while True:
            consumed = active_queues(app, params["timeout"], limit=limit)
            workers = {node: dict(pool=pool_of(node), queues=queues) for node, queues in sorted(consumed.items())}
            problems = problems_with(workers, params["expect"])
            enough = expected_count is None or len(workers) >= expected_count
            if (enough and not problems) or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        for detail in params["details"]:
            answers = ask(app, detail, params["timeout"], nodes=list(workers)) if workers else {}
            for node, answer in answers.items():
                if node not in workers:
                    continue
                if detail == "stats" and isinstance(answer, dict):
                    answer = {key: value for key, value in answer.items() if key != "broker"}
                elif detail in ("active", "reserved"):
                    answer = trimmed_tasks(answer)
                workers[node][detail] = answer
            for node in workers:
                if node not in answers:
                    problems.append(f"worker {node} did not answer {detail} within {params['timeout']} s")
    except Exception as exc:  # kombu and redis errors alike
        module.fail_json(msg=f"cannot ask the workers through the broker at {target.describe()}: "
                             f"{safe_error(exc, target)}", **report)
    report.update(workers=workers, problems=problems)
    for node, worker in workers.items():
        report["pools"].setdefault(worker["pool"], []).append(node)
    if problems:
        module.fail_json(msg="; ".join(problems), **report)
    module.exit_json(**report)


if __name__ == "__main__":
    main()
