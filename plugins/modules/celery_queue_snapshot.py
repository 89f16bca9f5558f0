#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: celery_queue_snapshot
short_description: Save the messages of Celery queues on a Redis broker to a file, and put them back
version_added: 0.1.0
description:
  - For a restart of a broker that keeps nothing on disk, as in the runbook's emergency C(down) and C(up) of
    the whole stack. Save every message of the named queues before, restore them after, and prove the count.
  - V(saved) reads, in one transaction, each queue's list for every priority step, and kombu's C(unacked) hash
    and C(unacked_index) of reserved messages, and writes them to O(path) (mode 0600, written whole or not
    at all). Messages are copied, not removed.
  - V(restored) puts back every saved message the broker does not hold, in one transaction, then reads
    again and fails unless each saved message is there exactly once.
  - Messages sent since the snapshot (a producer outside the stack, a cron job) stay, ahead of the saved
    ones, which are older and so are taken first; a saved message the broker kept (it keeps its data on
    disk) is not added again. Restoring twice changes nothing.
  - Save while no worker runs, since a message a worker takes after the snapshot and acknowledges comes
    back with the restore.
author:
  - pilito developers (@pilito)
extends_documentation_fragment:
  - pilito.priority_queue.attributes
  - pilito.priority_queue.broker
attributes:
  check_mode:
    support: full
    details: Counts what would be saved or restored, and writes neither the file nor the broker.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Saving again rewrites the file only when the broker's content changed; restoring again changes nothing.
options:
  state:
    description:
      - V(saved) writes the broker's messages to O(path); V(restored) puts the messages in O(path) back.
    type: str
    choices: [saved, restored]
    required: true
  path:
    description:
      - The snapshot file on the host that runs the module. It holds task arguments; keep it private.
    type: path
    required: true
  queues:
    description:
      - The queues to save. Required with O(state=saved); a restore takes the queues from the file.
    type: list
    elements: str
notes:
  - The file keeps messages as kombu stores them (JSON text, base64 bodies); anyone who can read it can read
    the tasks' arguments. The module never prints a message.
"""

EXAMPLES = r"""
- name: Save every queued message before the stack goes down
  pilito.priority_queue.celery_queue_snapshot:
    broker_url: "{{ vault_celery_broker_url }}"
    state: saved
    path: /root/pilito/priority_queue/state/broker_snapshot.json
    queues: [high_priority, default, low_priority, celery]
  register: saved

- name: Put them back once the broker is up again (fails unless the count matches)
  pilito.priority_queue.celery_queue_snapshot:
    broker_url: "{{ vault_celery_broker_url }}"
    state: restored
    path: /root/pilito/priority_queue/state/broker_snapshot.json
"""

RETURN = r"""
messages:
  description: Messages in the snapshot (waiting and reserved), saved or restored.
  returned: always
  type: int
  sample: 1520
queues:
  description: Waiting messages per queue, all priority steps together.
  returned: always
  type: dict
  sample: {"high_priority": 0, "default": 20, "low_priority": 1500, "celery": 0}
reserved:
  description: Messages reserved by workers and not acknowledged (the C(unacked) hash).
  returned: always
  type: int
  sample: 0
restored_keys:
  description: Redis keys written by a restore (keys that already held every saved message are left out).
  returned: when O(state=restored)
  type: list
  elements: str
  sample: ["low_priority", "default"]
put_back:
  description: Saved messages the restore wrote (waiting and reserved).
  returned: when O(state=restored)
  type: int
  sample: 1520
kept:
  description: Saved messages the broker still held, left as they were.
  returned: when O(state=restored)
  type: int
  sample: 0
beside:
  description: Messages the broker holds that are not in the snapshot (sent since), kept beside the saved ones.
  returned: when O(state=restored)
  type: int
  sample: 41
path:
  description: The snapshot file.
  returned: always
  type: str
  sample: /root/pilito/priority_queue/state/broker_snapshot.json
broker:
  description: The broker, described without its password.
  returned: always
  type: str
  sample: "127.0.0.1:6379 (redis, db 0)"
"""

import base64
import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import (
    UNACKED_INDEX_KEY,
    UNACKED_KEY,
    broker_argument_spec,
    connect,
    queue_keys,
)

FORMAT = 1


def encode(value):
    return base64.b64encode(value).decode("ascii")


def decode(text):
    return base64.b64decode(text.encode("ascii"))


def read(client, queues, priority_steps, prefix):
    """The broker's content for the queues, as the file keeps it: lists, then the reserved messages."""
    list_keys = [(queue, key) for queue in queues for _step, key in queue_keys(queue, priority_steps, prefix)]
    pipe = client.pipeline(transaction=True)
    for _queue, key in list_keys:
        pipe.lrange(key, 0, -1)
    pipe.hgetall(prefix + UNACKED_KEY)
    pipe.zrange(prefix + UNACKED_INDEX_KEY, 0, -1, withscores=True)
    replies = pipe.execute()
    lists = {key: [encode(item) for item in items] for (_queue, key), items in zip(list_keys, replies)}
    return dict(
        format=FORMAT,
        queues={queue: [key for name, key in list_keys if name == queue] for queue in queues},
        lists=lists,
        unacked={encode(field): encode(value) for field, value in replies[-2].items()},
        unacked_index={encode(member): score for member, score in replies[-1]},
        unacked_key=prefix + UNACKED_KEY,
        unacked_index_key=prefix + UNACKED_INDEX_KEY,
    )


def counts(snapshot):
    per_queue = {queue: sum(len(snapshot["lists"][key]) for key in keys) for queue, keys in snapshot["queues"].items()}
    reserved = len(snapshot["unacked"])
    return dict(messages=sum(per_queue.values()) + reserved, queues=per_queue, reserved=reserved)


def load(module, path):
    try:
        with open(path, encoding="utf-8") as handle:
            snapshot = json.load(handle)
    except FileNotFoundError:
        module.fail_json(msg=f"path: no snapshot at {path}; save one first (state=saved)")
    except (OSError, ValueError) as exc:
        module.fail_json(msg=f"path: cannot read the snapshot {path}: {exc}")
    if not isinstance(snapshot, dict) or snapshot.get("format") != FORMAT:
        module.fail_json(msg=f"path: {path} is not a snapshot written by celery_queue_snapshot")
    return snapshot


def write(path, snapshot):
    """Whole or not at all: a temporary file beside it, renamed over it."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".snapshot-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(snapshot, stream)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def merged(current, snapshot):
    """What the restore writes, from the broker's content now and the snapshot (both as read() gives
    them): {lists: {key: whole new list}, unacked: {field: value}, unacked_index: {member: score}}, and
    the counts put_back, kept, beside. A list is consumed from its tail, and the saved messages are
    older than any sent since: those stay at the head, the saved ones follow in their saved order, each
    once."""
    writes, put_back, kept, beside = dict(lists={}, unacked={}, unacked_index={}), 0, 0, 0
    for key, saved in snapshot["lists"].items():
        now = current["lists"].get(key) or []
        unmatched = {}
        for item in saved:
            unmatched[item] = unmatched.get(item, 0) + 1
        newer = []
        for item in now:
            if unmatched.get(item):
                unmatched[item] -= 1
            else:
                newer.append(item)
        missing = sum(unmatched.values())
        put_back, kept, beside = put_back + missing, kept + len(saved) - missing, beside + len(newer)
        if newer + saved != now:
            writes["lists"][key] = newer + saved
    for name in ("unacked", "unacked_index"):
        for field, value in snapshot[name].items():
            if field not in current[name]:
                writes[name][field] = value
    put_back += len(writes["unacked"])
    kept += len(snapshot["unacked"]) - len(writes["unacked"])
    beside += len(set(current["unacked"]) - set(snapshot["unacked"]))
    return writes, dict(put_back=put_back, kept=kept, beside=beside)


def written_keys(writes, snapshot):
    keys = list(writes["lists"])
    keys += [snapshot[name + "_key"] for name in ("unacked", "unacked_index") if writes[name]]
    return keys


def missing_after(current, snapshot):
    """The saved messages not held exactly once (should be none after a restore): per key, a count."""
    found = []
    for key, saved in snapshot["lists"].items():
        now = current["lists"].get(key) or []
        wrong = sum(1 for item in set(saved) if now.count(item) != saved.count(item))
        if wrong:
            found.append(f"{key!r}: {wrong} saved messages not there exactly once")
    absent = set(snapshot["unacked"]) - set(current["unacked"])
    if absent:
        found.append(f"{snapshot['unacked_key']!r}: {len(absent)} reserved messages missing")
    return found


def restore(client, snapshot, steps, prefix):
    """Reads and writes in one transaction (WATCH): a message a producer sends meanwhile has the
    transaction read again, so none is overwritten. Returns (writes, figures)."""
    from redis.exceptions import WatchError

    keys = list(snapshot["lists"]) + [snapshot["unacked_key"], snapshot["unacked_index_key"]]
    for _attempt in range(50):
        with client.pipeline(transaction=True) as pipe:
            pipe.watch(*keys)
            writes, figures = merged(read(client, list(snapshot["queues"]), steps, prefix), snapshot)
            pipe.multi()
            for key, items in writes["lists"].items():
                pipe.delete(key)
                pipe.rpush(key, *(decode(item) for item in items))
            if writes["unacked"]:
                pipe.hset(snapshot["unacked_key"], mapping={decode(f): decode(v) for f, v in writes["unacked"].items()})
            if writes["unacked_index"]:
                pipe.zadd(snapshot["unacked_index_key"],
                          {decode(m): score for m, score in writes["unacked_index"].items()})
            try:
                pipe.execute()
            except WatchError:
                continue
            return writes, figures
    raise RuntimeError("the queues kept changing: 50 attempts to restore were interrupted by messages sent meanwhile")


def main():
    argument_spec = broker_argument_spec()
    argument_spec.update(
        state=dict(type="str", required=True, choices=["saved", "restored"]),
        path=dict(type="path", required=True),
        queues=dict(type="list", elements="str"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_if=[("state", "saved", ["queues"])],
        supports_check_mode=True,
    )
    params = module.params
    path, steps, prefix = params["path"], params["priority_steps"], params["broker_key_prefix"]
    if params["state"] == "saved":
        if not params["queues"] or not all(params["queues"]):
            module.fail_json(msg="queues must name at least one queue, and no empty names")
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            module.fail_json(msg=f"path: the directory of {path} does not exist")

    target, client = connect(module)
    if params["state"] == "saved":
        snapshot = read(client, list(dict.fromkeys(params["queues"])), steps, prefix)
        previous = None
        if os.path.exists(path):
            previous = load(module, path)
        changed = previous != snapshot
        if changed and not module.check_mode:
            write(path, snapshot)
        module.exit_json(changed=changed, path=path, broker=target.describe(), **counts(snapshot))

    snapshot = load(module, path)
    current = read(client, list(snapshot["queues"]), steps, prefix)
    writes, figures = merged(current, snapshot)
    if module.check_mode or not figures["put_back"] and not written_keys(writes, snapshot):
        module.exit_json(changed=bool(written_keys(writes, snapshot)), restored_keys=written_keys(writes, snapshot),
                         path=path, broker=target.describe(), **figures, **counts(snapshot))
    try:
        writes, figures = restore(client, snapshot, steps, prefix)
    except RuntimeError as exc:
        module.fail_json(msg=str(exc), path=path, broker=target.describe(), **counts(snapshot))
    wrong = missing_after(read(client, list(snapshot["queues"]), steps, prefix), snapshot)
    if wrong:
        module.fail_json(msg="after the restore: " + "; ".join(wrong), path=path, broker=target.describe(),
                         restored_keys=written_keys(writes, snapshot), **figures, **counts(snapshot))
    module.exit_json(changed=bool(written_keys(writes, snapshot)), restored_keys=written_keys(writes, snapshot),
                     path=path, broker=target.describe(), **figures, **counts(snapshot))


if __name__ == "__main__":
    main()
