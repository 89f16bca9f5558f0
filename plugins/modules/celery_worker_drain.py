#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: celery_worker_drain
short_description: Stop Celery workers taking messages before they stop, or let them take messages again
version_added: 0.1.0
description:
  - With O(state=drained), every worker on the given container host names stops consuming each of its queues
    (Celery's C(cancel_consumer), answered by the worker), and the module then waits out kombu's fetch in flight
    (its C(BRPOP) of up to 1 s), so the worker takes nothing more and gives back what it fetched. Running tasks go
    on. A worker then stops warm without losing a message; kombu before 5.3.2 loses the message of a fetch in
    flight when a worker stops.
  - With O(state=resumed), the workers consume again the queues a drain took from them (O(drained), the
    RV(drained) of that drain). This is for a step that failed after the drain, when the workers keep running.
  - Workers are reached by remote control over the broker; no app code is needed.
author:
  - pilito developers (@pilito)
extends_documentation_fragment:
  - pilito.priority_queue.attributes
  - pilito.priority_queue.broker
attributes:
  check_mode:
    support: full
    details: In check mode the workers are asked which queues they consume, and nothing is cancelled or added.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A drained worker consumes nothing, so a second drain changes nothing; the same holds for resuming.
options:
  hostnames:
    description:
      - Host names of the containers whose workers drain (a node named C(<anything>@<host name>) is theirs).
      - Required with O(state=drained).
    type: list
    elements: str
    default: []
  state:
    description: V(drained) stops the workers consuming; V(resumed) gives them their queues back.
    type: str
    choices: [drained, resumed]
    default: drained
  drained:
    description: Node name -> the queues to consume again, for O(state=resumed).
    type: dict
    default: {}
  timeout:
    description:
      - Seconds to wait for the workers' answers.
      - The workers on O(hostnames) are pinged again until each has answered or this has passed, since a
        worker busy under load can miss one ping.
    type: float
    default: 10.0
  fetch_seconds:
    description:
      - Seconds to wait after the drain for a fetch in flight to end (kombu's C(brpop_timeout) is 1 s).
      - A worker that loads the rendered config module C(celery_priority) says when its fetch has ended, and
        the wait ends then; for the others it lasts these seconds.
    type: float
    default: 1.1
requirements:
  - celery (Python library) on the managed host, for remote control
  - redis (Python library, 4.1 or newer)
notes:
  - A worker that does not answer (hung, or not a Celery worker) cannot be drained; it is listed in
    RV(not_drained) with a warning, since stopping it may lose the message of its fetch in flight.
"""

EXAMPLES = r"""
- name: Stop the workers about to be replaced taking messages
  pilito.priority_queue.celery_worker_drain:
    broker_url: "{{ vault_celery_broker_url }}"
    hostnames: [3f2a1b0c9d8e, 7a6b5c4d3e2f]
  register: drain

- name: Give them their queues back when the step after the drain failed
  pilito.priority_queue.celery_worker_drain:
    broker_url: "{{ vault_celery_broker_url }}"
    state: resumed
    drained: "{{ drain.drained }}"
"""

RETURN = r"""
drained:
  description: Node name -> the queues it stopped consuming (O(state=drained)) or consumes again (O(state=resumed)).
  returned: always
  type: dict
  sample: {"celery_worker@3f2a1b0c9d8e": ["high_priority", "default", "low_priority"]}
not_drained:
  description: Host names on which no worker answered.
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
    WorkerError,
    active_queues,
    ask,
    command,
    host_of,
    nodes_on_hosts,
    safe_error,
    workers_app,
)


def drain(module, app):
    params = module.params
    nodes = nodes_on_hosts(app, params["hostnames"], params["timeout"])
    answered_hosts = {host_of(node) for node in nodes}
    not_drained = sorted(set(params["hostnames"]) - answered_hosts)
    consumed = active_queues(app, params["timeout"], nodes=nodes)
    silent = sorted(set(nodes) - set(consumed))
    if silent:
        raise WorkerError(f"no answer to active_queues within {params['timeout']} s from {', '.join(silent)}")
    to_drain = {node: queues for node, queues in consumed.items() if queues}
    if not module.check_mode:
        for node, queues in to_drain.items():
            for queue in queues:
                command(app, "cancel_consumer", [node], params["timeout"], queue=queue)
        if to_drain:
            wait_for_fetches(app, sorted(to_drain), params["fetch_seconds"], params["timeout"])
    return to_drain, not_drained


def wait_for_fetches(app, nodes, seconds, timeout):
    """A fetch sent before the drain still returns. Workers with the rendered config's control command
    report a fetch in flight; once none has one, nothing more can arrive. Otherwise: the whole wait."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answers = ask(app, "priority_queue_fetch", min(timeout, seconds), nodes=nodes, mode="status")
        states = [answers.get(node) for node in nodes]
        if not all(isinstance(state, dict) and "in_flight" in state for state in states):
            time.sleep(max(0.0, deadline - time.monotonic()))
            return
        if not any(state["in_flight"] for state in states):
            return
        time.sleep(0.05)


def resume(module, app):
    params = module.params
    drained = {node: list(queues or []) for node, queues in params["drained"].items()}
    consumed = active_queues(app, params["timeout"], nodes=list(drained))
    to_resume = {}
    for node, queues in drained.items():
        if node not in consumed:
            module.warn(f"{node} did not answer; it has no queues to take back (stopped or gone)")
            continue
        missing = [queue for queue in queues if queue not in consumed[node]]
        if missing:
            to_resume[node] = missing
    if not module.check_mode:
        for node, queues in to_resume.items():
            for queue in queues:
                command(app, "add_consumer", [node], params["timeout"], queue=queue)
    return to_resume


def main():
    argument_spec = broker_argument_spec()
    argument_spec.update(
        hostnames=dict(type="list", elements="str", default=[]),
        state=dict(type="str", default="drained", choices=["drained", "resumed"]),
        drained=dict(type="dict", default={}),
        timeout=dict(type="float", default=10.0),
        fetch_seconds=dict(type="float", default=1.1),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if params["timeout"] <= 0 or params["fetch_seconds"] < 0:
        module.fail_json(msg="timeout must be positive and fetch_seconds not negative")
    if params["state"] == "drained" and (not params["hostnames"] or not all(params["hostnames"])):
        module.fail_json(msg=f"state=drained needs hostnames, the container host names whose workers drain, "
                             f"none of them empty; got {params['hostnames']!r}")
    for node, queues in params["drained"].items():
        if queues is not None and (not isinstance(queues, list) or not all(isinstance(q, str) and q for q in queues)):
            module.fail_json(msg=f"drained.{node} must be a list of queue names, got {queues!r}")
    target, app = workers_app(module)
    report = dict(changed=False, broker=target.describe(), drained={}, not_drained=[])
    try:
        if params["state"] == "drained":
            report["drained"], report["not_drained"] = drain(module, app)
            for hostname in report["not_drained"]:
                module.warn(f"no Celery worker answered on host {hostname}: it was not drained, and stopping it may "
                            f"lose the message of a fetch in flight")
        else:
            report["drained"] = resume(module, app)
    except WorkerError as exc:
        action = "draining" if params["state"] == "drained" else "resuming"
        module.fail_json(msg=f"{action} the workers failed: {exc}", **report)
    except Exception as exc:  # kombu and redis errors alike
        module.fail_json(msg=f"cannot reach the workers through the broker at {target.describe()}: "
                             f"{safe_error(exc, target)}", **report)
    report["changed"] = bool(report["drained"])
    module.exit_json(**report)


if __name__ == "__main__":
    main()
