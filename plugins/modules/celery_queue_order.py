#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: celery_queue_order
short_description: Prove that each Celery worker on several queues takes them in their order
version_added: 0.1.0
description:
  - For every pool that consumes more than one queue, checks that each of its workers empties the first queue
    before the next. With one probe message waiting on each of the pool's queues (put there last queue first),
    the worker is let take one message at a time, and the queues it takes them from must be the pool's queues
    in order.
  - While a pool is checked, every worker that consumes any of its queues is held (takes no new message, as if
    its processes were busy; running tasks go on), so no other worker takes a probe. The hold lasts about a
    second, ends when the check ends, and runs out on its own after O(hold_seconds) should the check die.
  - A worker whose processes are all busy cannot take a probe; its order is then the one it reports for its
    next fetch, and the result says so.
  - Probes are messages of Celery's builtin task C(celery.accumulate), which every app has, sent with no result
    to store. Workers are reached by remote control over the broker, through the control command
    C(priority_queue_fetch) that the rendered config module C(celery_priority) adds to every worker that loads
    it. A worker without it fails the check, named.
author:
  - pilito developers (@pilito)
extends_documentation_fragment:
  - pilito.priority_queue.attributes
  - pilito.priority_queue.broker
attributes:
  check_mode:
    support: partial
    details: In check mode no worker is held and no probe is sent; only the workers' answers are read.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Every probe is taken and every hold released; nothing is left changed.
options:
  pools:
    description:
      - Pool name -> its queues, in the order its workers must take them. A pool's workers are the nodes named
        C(<pool>@<host>), as the rendered compose services name them.
      - Pools with a single queue have no order to check and are skipped.
    type: dict
    required: true
  control_timeout:
    description: Seconds to wait for the workers' answers to each remote-control call.
    type: float
    default: 2.0
  fetch_timeout:
    description:
      - Seconds a worker may take to take every probe, one message at a time. Real work that waits at the head
        of an earlier queue is taken first, as it should be; a worker that does not reach every probe in time is
        judged by its own report instead, with a warning.
    type: float
    default: 5.0
  hold_seconds:
    description:
      - How long a hold lasts unless renewed. Workers resume by themselves this long after a check that died.
    type: float
    default: 10.0
requirements:
  - celery (Python library) on the managed host, for remote control
  - redis (Python library, 4.1 or newer)
notes:
  - Redis brokers only, as kombu's Redis transport is where the order is decided.
"""

EXAMPLES = r"""
- name: Prove the general pool takes high_priority first, then default, then low_priority
  pilito.priority_queue.celery_queue_order:
    broker_url: "{{ vault_celery_broker_url }}"
    pools:
      celery_ai: [high_priority]
      celery_worker: [high_priority, default, low_priority]
  register: queue_order
"""

RETURN = r"""
pools:
  description: Per checked pool, the expected order, how long its consumers were held, and each worker's result.
  returned: always
  type: dict
  contains:
    expected:
      description: The pool's queues in order.
      type: list
      elements: str
    held_seconds:
      description: How long the workers consuming the pool's queues took no new message.
      type: float
    held:
      description: The workers that were held.
      type: list
      elements: str
    workers:
      description: Worker name -> RV(pools.workers.taken), RV(pools.workers.fetch_order) and RV(pools.workers.checked_by).
      type: dict
      contains:
        taken:
          description: The queues of the probes the worker took, in the order it took them (empty when busy).
          type: list
          elements: str
        fetch_order:
          description: The queues the worker's next fetch asks Redis for, as the worker reports them.
          type: list
          elements: str
        checked_by:
          description: V(fetch) when the worker took the probes; V(report) when it was busy and reported its order.
          type: str
  sample:
    celery_worker:
      expected: [high_priority, default, low_priority]
      held_seconds: 1.02
      held: [celery_ai@a1b2, celery_worker@c3d4]
      workers:
        celery_worker@c3d4:
          taken: [high_priority, default, low_priority]
          fetch_order: [high_priority, default, low_priority]
          checked_by: fetch
problems:
  description: One line per worker out of order, or per pool that could not be checked.
  returned: on failure
  type: list
  elements: str
  sample:
    - "pool celery_worker: worker celery_worker@c3d4 took low_priority, default, high_priority;
      the topology's order is high_priority, default, low_priority"
broker:
  description: The broker, described without its password.
  returned: always
  type: str
  sample: "127.0.0.1:6379 (redis, db 0)"
"""

import json
import time
import uuid

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import (
    broker_argument_spec,
    connect,
    probe_message,
    queue_key,
    wake_up,
)
from ansible_collections.pilito.priority_queue.plugins.module_utils.workers import (
    WorkerError,
    active_queues,
    command,
    control_app,
)

CONTROL = "priority_queue_fetch"
POLL_SECONDS = 0.002
MAX_FETCHES = 200


def in_order(seen, expected):
    """The pool's queues in the order `seen` has them (other queues a worker may consume are ignored)."""
    return [queue for queue in seen if queue in expected]


class OrderCheck:
    def __init__(self, module, app, client):
        self.module = module
        self.app = app
        self.client = client
        self.params = module.params
        self.prefix = module.params["broker_key_prefix"]

    def control(self, nodes, mode):
        try:
            return command(self.app, CONTROL, nodes, self.params["control_timeout"],
                           mode=mode, seconds=self.params["hold_seconds"])
        except WorkerError as exc:
            unknown = sorted(node for node, error in exc.errors.items() if CONTROL in str(error))
            if unknown:
                raise WorkerError(f"{', '.join(unknown)} does not know the control command {CONTROL}: it has not "
                                  f"loaded the rendered config module celery_priority (check the app's opt-in line "
                                  f"and the worker's PYTHONPATH)") from None
            raise

    def wait_for_fetches_in_flight(self, held):
        """A fetch sent before the hold still returns (within kombu's BRPOP timeout of 1 s)."""
        deadline = time.monotonic() + max(3.0, self.params["control_timeout"])
        while True:
            busy = [node for node, reply in self.control(held, "hold").items() if reply.get("in_flight")]
            if not busy:
                return
            if time.monotonic() > deadline:
                raise WorkerError(f"{', '.join(busy)} still had a fetch in flight after being held")
            time.sleep(0.1)

    def push_probes(self, queues):
        """One probe per queue, at the head of its list (next to be taken), last queue first."""
        probes = {}
        for queue in reversed(queues):
            task_id = f"pilito-order-probe-{uuid.uuid4()}"
            payload = json.dumps(probe_message(queue, task_id, str(uuid.uuid4()), origin="pilito-queue-order",
                                               ignore_result=True))
            with self.client.pipeline() as pipe:
                wake_up(pipe.rpush(queue_key(queue, 0, self.prefix), payload), queue, self.prefix).execute()
            probes[queue] = payload
        return probes

    def still_waiting(self, probes):
        pipe = self.client.pipeline(transaction=False)
        for queue, payload in probes.items():
            pipe.lpos(queue_key(queue, 0, self.prefix), payload)
        return {queue for queue, position in zip(probes, pipe.execute()) if position is not None}

    def remove(self, probes):
        for queue, payload in probes.items():
            self.client.lrem(queue_key(queue, 0, self.prefix), 1, payload)

    def take_in_turn(self, node, held, probes):
        """Let the worker take one message at a time; return the queues of the probes in the order it
        took them. Probes wait at the head of their lists, so real work that arrives meanwhile (at the
        tails) never changes that order, though the worker may take some of it first, rightly: a
        message of an earlier queue before a later queue's probe."""
        taken = []
        waiting = set(probes)
        deadline = time.monotonic() + self.params["fetch_timeout"]
        fetches = 0
        while waiting:
            if fetches >= MAX_FETCHES or time.monotonic() > deadline:
                return taken, None, (f"{node} took {fetches} messages in {self.params['fetch_timeout']} s, "
                                     f"not yet every probe")
            self.control(held, "hold")  # renews the hold of every consumer
            self.control([node], "once")
            fetches += 1
            gone = self.wait_for_the_fetch(node, probes, waiting, deadline)
            if len(gone) > 1:
                return taken, (f"probes on {', '.join(sorted(gone))} went at once while only {node} could fetch: "
                               f"a worker that was not held consumes these queues"), None
            taken.extend(gone)
            waiting -= gone
        return taken, None, None

    def wait_for_the_fetch(self, node, probes, waiting, deadline):
        """The probes gone once the worker's one fetch is done (none when it took other work)."""
        next_status = time.monotonic() + 0.05
        while True:
            gone = waiting - self.still_waiting({queue: probes[queue] for queue in waiting})
            if gone or time.monotonic() > deadline:
                return gone
            if time.monotonic() >= next_status:
                status = self.control([node], "status")[node]
                if not status["once_pending"] and not status["in_flight"]:
                    # Its fetch returned something else; a probe taken at that very moment shows now.
                    return waiting - self.still_waiting({queue: probes[queue] for queue in waiting})
                next_status = time.monotonic() + 0.05
            time.sleep(POLL_SECONDS)

    def check_pool(self, pool, queues, consumers):
        nodes = sorted(node for node in consumers if node.startswith(pool + "@"))
        result = dict(expected=queues, held=[], held_seconds=0.0, workers={})
        if not nodes:
            return result, [f"pool {pool}: no worker named {pool}@... answered"]
        held = sorted(node for node, consumed in consumers.items() if set(consumed) & set(queues))
        result["held"] = held
        problems = []
        probes = {}
        started = time.monotonic()
        try:
            self.control(held, "hold")
            self.wait_for_fetches_in_flight(held)
            for node in nodes:
                busy = None
                status = self.control([node], "status")[node]
                worker = dict(taken=[], fetch_order=in_order(status["fetch_order"], queues), checked_by="fetch")
                result["workers"][node] = worker
                if status["can_fetch"]:
                    probes = self.push_probes(queues)
                    worker["taken"], problem, busy = self.take_in_turn(node, held, probes)
                    self.remove(probes)
                    probes = {}
                    if problem:
                        problems.append(f"pool {pool}: {problem}")
                        continue
                taken = worker["taken"]
                if (status["can_fetch"] and not busy) or taken != queues[:len(taken)]:
                    seen = taken  # every probe taken, or already out of order
                else:
                    worker["checked_by"] = "report"
                    seen = worker["fetch_order"]
                    self.module.warn(f"{node}: {busy or 'its processes were busy'}, so its order is its own report "
                                     f"({', '.join(seen)}), not a fetch")
                if seen != queues:
                    verb = "took" if worker["checked_by"] == "fetch" else "asks for"
                    problems.append(f"pool {pool}: worker {node} {verb} {', '.join(seen)}; "
                                    f"the topology's order is {', '.join(queues)}")
        finally:
            if probes:
                self.remove(probes)
            try:
                self.control(held, "resume")
            except WorkerError as exc:
                problems.append(f"pool {pool}: resuming the held workers failed ({exc}); "
                                f"they resume by themselves within {self.params['hold_seconds']} s")
            result["held_seconds"] = round(time.monotonic() - started, 3)
        return result, problems


def main():
    argument_spec = broker_argument_spec()
    argument_spec.update(
        pools=dict(type="dict", required=True),
        control_timeout=dict(type="float", default=2.0),
        fetch_timeout=dict(type="float", default=5.0),
        hold_seconds=dict(type="float", default=10.0),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    for name in ("control_timeout", "fetch_timeout", "hold_seconds"):
        if params[name] <= 0:
            module.fail_json(msg=f"{name} must be a positive number of seconds, got {params[name]}")
    pools = {}
    for pool, queues in params["pools"].items():
        if not isinstance(queues, list) or not queues or not all(isinstance(q, str) and q for q in queues):
            module.fail_json(msg=f"pools.{pool} must be a non-empty list of queue names, got {queues!r}")
        if len(set(queues)) != len(queues):
            module.fail_json(msg=f"pools.{pool} names a queue twice: {queues!r}")
        if len(queues) > 1:
            pools[pool] = queues

    target, client = connect(module)
    report = dict(changed=False, broker=target.describe(), pools={})
    app = control_app(module, target)
    try:
        consumers = active_queues(app, params["control_timeout"])
    except Exception as exc:  # kombu and redis errors alike; the URL is never part of the message
        module.fail_json(msg=f"cannot ask the workers which queues they consume: {type(exc).__name__}", **report)
    if module.check_mode:
        module.exit_json(msg="check mode: no worker held, no probe sent", **report)

    check = OrderCheck(module, app, client)
    problems = []
    for pool, queues in pools.items():
        try:
            report["pools"][pool], found = check.check_pool(pool, queues, consumers)
        except WorkerError as exc:
            report["pools"].setdefault(pool, dict(expected=queues))
            found = [f"pool {pool}: {exc}"]
        problems.extend(found)
    if problems:
        module.fail_json(msg="; ".join(problems), problems=problems, **report)
    module.exit_json(**report)


if __name__ == "__main__":
    main()
