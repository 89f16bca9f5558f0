#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: celery_queue_move
short_description: Move waiting Celery messages from one queue to another on a Redis broker
version_added: 0.1.0
description:
  - Moves the messages waiting on one Celery queue to another, keeping their order and their priority level,
    for example from V(low_priority) to V(celery) before a rollback leaves V(low_priority) without a consumer.
  - Messages move from the source's list for a priority step to the destination's list for the same step, oldest
    first, in batches that each run as one Redis script. The script takes a message only if it is still the
    next one on the source, so a worker taking messages at the same time is safe. An interruption at any point
    loses nothing and duplicates nothing; running the module again moves what is left.
  - A moved Celery message is readdressed to the destination. Its delivery info names the destination as
    routing key on the default exchange, which kombu delivers straight to that queue. A worker that takes it
    and dies before acknowledging it, and a task that retries, then return it to the destination, not to the
    old queue.
    Messages that are not kombu JSON move unchanged.
  - Highest priority (step 0) moves first. Moved messages queue behind those already waiting on the destination.
  - Only waiting messages move, unless O(include_unacked) also moves the reserved messages of workers that
    are gone (never those of a live worker).
author:
  - pilito developers (@pilito)
extends_documentation_fragment:
  - pilito.priority_queue.attributes
  - pilito.priority_queue.broker
attributes:
  check_mode:
    support: full
    details: Reports how many messages would move, per priority step, and moves none.
  diff_mode:
    support: full
    details: Shows the lengths of both queues before and after.
  idempotent:
    support: full
    details: When the source holds nothing, nothing moves and the task reports no change.
options:
  source:
    description: The queue to empty.
    type: str
    required: true
  destination:
    description: The queue that receives the messages. It should have a consumer, or the messages wait there.
    type: str
    required: true
  limit:
    description:
      - Move at most this many messages. Without it, move all.
    type: int
  include_unacked:
    description:
      - Also move messages that workers reserved and never acknowledged (kombu's C(unacked) hash) whose
        routing key is the source. kombu would return them to the source after its visibility timeout; moved,
        they go to the front of the destination (they were being worked on), as kombu restores them.
      - Before moving any, the module asks the workers over the broker (Celery's remote control). While a live
        worker, on any host, consumes the source, none of the source's reserved messages moves; otherwise those
        a live worker holds (active, reserved or scheduled) stay. Moved, such a message would run twice.
        What stays is counted in RV(kept_unacked), with a warning.
      - A worker that does not answer within O(workers_timeout) counts as gone. A rollback moves reserved
        messages after the source's workers stopped; so does a deploy for the old queue.
    type: bool
    default: false
  workers_timeout:
    description:
      - Seconds to wait for the workers' answers before reserved messages move (with O(include_unacked), and
        only when the source has reserved messages).
    type: float
    default: 2.0
  batch_size:
    description:
      - Messages moved per round trip to the broker. Each move stays atomic on its own.
    type: int
    default: 1000
requirements:
  - celery (Python library) on the managed host, for O(include_unacked) (remote control)
  - redis (Python library, 4.1 or newer)
"""

EXAMPLES = r"""
- name: Before plan B of the rollback, give crawl messages to the queue the old workers consume
  pilito.priority_queue.celery_queue_move:
    broker_url: "{{ vault_celery_broker_url }}"
    source: low_priority
    destination: celery

- name: Move at most 500 messages
  pilito.priority_queue.celery_queue_move:
    broker_url: redis://127.0.0.1:6379/0
    source: default
    destination: celery
    limit: 500
  register: moved
"""

RETURN = r"""
moved:
  description: Messages moved (in check mode, that would move).
  returned: always
  type: int
  sample: 1500
moved_unacked:
  description: Reserved messages moved from the C(unacked) hash (with O(include_unacked)); counted in RV(moved).
  returned: always
  type: int
  sample: 1
kept_unacked:
  description:
    - Reserved messages of the source left in the C(unacked) hash because a live worker consumes the source or
      holds them (with O(include_unacked)). kombu gives them back to the source if their worker dies.
  returned: always
  type: int
  sample: 0
moved_by_priority:
  description: Messages moved per priority step (keys are the steps as strings).
  returned: always
  type: dict
  sample: {"0": 1490, "3": 0, "6": 10, "9": 0}
source_length:
  description: Waiting messages on the source before and after.
  returned: always
  type: dict
  sample: {"before": 1500, "after": 0}
destination_length:
  description: Waiting messages on the destination before and after.
  returned: always
  type: dict
  sample: {"before": 3, "after": 1503}
broker:
  description: The broker, described without its password.
  returned: always
  type: str
  sample: "127.0.0.1:6379 (redis, db 0)"
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import (
    UNACKED_INDEX_KEY,
    UNACKED_KEY,
    broker_argument_spec,
    connect,
    priority_step,
    queue_key,
    queue_keys,
    unacked_entries,
    wake_up,
)
from ansible_collections.pilito.priority_queue.plugins.module_utils.workers import active_queues, ask, control_app


def waiting(client, queue, priority_steps, prefix=""):
    pipe = client.pipeline(transaction=False)
    keys = queue_keys(queue, priority_steps, prefix)
    for _step, key in keys:
        pipe.llen(key)
    return {str(step): length for (step, _key), length in zip(keys, pipe.execute())}


def plan(source_lengths, limit=None):
    """How many messages each priority step gives, highest priority first, within the limit."""
    remaining = limit if limit is not None else sum(source_lengths.values())
    result = {}
    for step, length in sorted(source_lengths.items(), key=lambda item: int(item[0])):
        result[step] = min(length, remaining)
        remaining -= result[step]
    return result


# ARGV holds (message as read, message as it arrives) pairs, next-to-be-taken first. A message moves only
# while it is still the next one on the source; the first mismatch (a worker took it) ends the batch.
MOVE_SCRIPT = """
local moved = 0
for i = 1, #ARGV, 2 do
  if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[i] then break end
  redis.call('RPOP', KEYS[1])
  redis.call('LPUSH', KEYS[2], ARGV[i + 1])
  moved = moved + 1
end
return moved
"""


# A reserved message moves only while its unacked entry is unchanged; as kombu's restore, it leaves
# the unacked hash and its index, and goes to the front of the queue (RPUSH: the next one taken).
MOVE_UNACKED_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[3])
return 1
"""


def readdress(raw, queue):
    """The message as if sent straight to queue: kombu routes the default exchange ("") by queue name."""
    try:
        message = json.loads(raw)
        delivery_info = message["properties"]["delivery_info"]
    except (ValueError, TypeError, KeyError):
        return raw
    if not isinstance(delivery_info, dict):
        return raw
    if delivery_info.get("exchange") == "" and delivery_info.get("routing_key") == queue:
        return raw
    delivery_info["exchange"] = ""
    delivery_info["routing_key"] = queue
    return json.dumps(message)


def move(client, source, destination, priority_steps, prefix="", limit=None, batch_size=1000):
    """Each script call is atomic: a message is either still on the source or already on the destination."""
    script = client.register_script(MOVE_SCRIPT)
    moved = {}
    remaining = limit
    for (step, source_key), (_step, destination_key) in zip(
            queue_keys(source, priority_steps, prefix), queue_keys(destination, priority_steps, prefix)):
        moved[str(step)] = 0
        while remaining is None or remaining > 0:
            batch = batch_size if remaining is None else min(batch_size, remaining)
            # The next messages a worker would take are at the right end, the very next one last.
            taken = list(reversed(client.lrange(source_key, -batch, -1)))
            if not taken:
                break
            pairs = [part for raw in taken for part in (raw, readdress(raw, destination))]
            done = script(keys=[source_key, destination_key], args=pairs)
            wake_up(client.pipeline(), destination, prefix, done).execute()
            moved[str(step)] += done
            if remaining is not None:
                remaining -= done
    return moved


def orphans(client, source, priority_steps, prefix=""):
    """Unacked entries whose routing key is the source: (tag, entry as stored, message, priority step)."""
    return [(tag, raw, message, priority_step(message, priority_steps))
            for tag, raw, message, routing_key in unacked_entries(client, prefix) if routing_key == source]


def task_id(message):
    headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    properties = message.get("properties") if isinstance(message.get("properties"), dict) else {}
    return headers.get("id") or properties.get("correlation_id")


def held_by_live_workers(app, source, found, timeout):
    """Split the source's reserved messages into (free to move, kept, the live consumers of the source).
    Read after the unacked hash: a message a live worker took before is in its answer by then."""
    live = active_queues(app, timeout)
    consumers = sorted(node for node, queues in live.items() if source in queues)
    if consumers:
        return [], found, consumers
    held = set()
    for name in ("active", "reserved", "scheduled"):
        for requests in ask(app, name, timeout, nodes=list(live)).values():
            for item in requests if isinstance(requests, list) else []:
                request = item.get("request", item) if isinstance(item, dict) else {}
                held.add(request.get("id"))
    held.discard(None)
    return ([item for item in found if task_id(item[2]) not in held],
            [item for item in found if task_id(item[2]) in held], [])


def move_unacked(client, found, destination, priority_steps, prefix=""):
    script = client.register_script(MOVE_UNACKED_SCRIPT)
    moved = {str(step): 0 for step in priority_steps}
    for tag, raw, message, step in found:
        for part in (message.get("headers"), message.get("properties", {}).get("delivery_info")):
            if isinstance(part, dict):
                part["redelivered"] = True
        payload = readdress(json.dumps(message), destination)
        if script(keys=[prefix + UNACKED_KEY, prefix + UNACKED_INDEX_KEY, queue_key(destination, step, prefix)],
                  args=[tag, raw, payload]):
            moved[str(step)] += 1
    wake_up(client.pipeline(), destination, prefix, sum(moved.values())).execute()
    return moved


def main():
    argument_spec = broker_argument_spec()
    argument_spec.update(
        source=dict(type="str", required=True),
        destination=dict(type="str", required=True),
        limit=dict(type="int"),
        batch_size=dict(type="int", default=1000),
        include_unacked=dict(type="bool", default=False),
        workers_timeout=dict(type="float", default=2.0),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    source, destination = params["source"], params["destination"]
    if not source or not destination:
        module.fail_json(msg="source and destination must name queues")
    if source == destination:
        module.fail_json(msg=f"source and destination are the same queue ({source!r}); nothing to move")
    if params["limit"] is not None and params["limit"] < 0:
        module.fail_json(msg=f"limit must be 0 or more, got {params['limit']}")
    if params["batch_size"] < 1:
        module.fail_json(msg=f"batch_size must be at least 1, got {params['batch_size']}")

    target, client = connect(module)
    steps, prefix = params["priority_steps"], params["broker_key_prefix"]
    source_before = waiting(client, source, steps, prefix)
    destination_before = sum(waiting(client, destination, steps, prefix).values())
    reserved = orphans(client, source, steps, prefix) if params["include_unacked"] else []
    kept, consumers = [], []
    if reserved:
        reserved, kept, consumers = held_by_live_workers(control_app(module, target), source, reserved,
                                                         params["workers_timeout"])
    if kept:
        why = (f"live workers consume {source} ({', '.join(consumers)})" if consumers
               else "live workers hold them")
        module.warn(f"{len(kept)} reserved messages of {source} stay reserved: {why}. Moved, they would run "
                    f"twice; should their worker die, kombu gives them back to {source}.")
    if module.check_mode:
        moved = plan(source_before, params["limit"])
        unacked = {str(step): sum(1 for item in reserved if item[3] == step) for step in steps}
    else:
        moved = move(client, source, destination, steps, prefix, params["limit"], params["batch_size"])
        unacked = move_unacked(client, reserved, destination, steps, prefix)
    waiting_moved, unacked_moved = sum(moved.values()), sum(unacked.values())
    result = dict(
        changed=waiting_moved + unacked_moved > 0,
        moved=waiting_moved + unacked_moved,
        moved_unacked=unacked_moved,
        kept_unacked=len(kept),
        moved_by_priority={step: count + unacked.get(step, 0) for step, count in moved.items()},
        source_length=dict(before=sum(source_before.values()), after=sum(source_before.values()) - waiting_moved),
        destination_length=dict(before=destination_before, after=destination_before + waiting_moved + unacked_moved),
        broker=target.describe(),
    )
    if not module.check_mode:
        # Read back rather than compute: producers and consumers may be active.
        result["source_length"]["after"] = sum(waiting(client, source, steps, prefix).values())
        result["destination_length"]["after"] = sum(waiting(client, destination, steps, prefix).values())
    if module._diff:
        result["diff"] = dict(
            before=f"{source}: {result['source_length']['before']}\n{destination}: {destination_before}\n",
            after=f"{source}: {result['source_length']['after']}\n{destination}: {result['destination_length']['after']}\n",
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
