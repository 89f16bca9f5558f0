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
  - V(restored) puts each list and the reserved messages back exactly as saved, in one transaction, then
    counts again and fails if the broker holds a different number than the file.
  - A key that already holds exactly what was saved (a broker that kept its data) is left alone, so
    restoring twice changes nothing. A key that holds anything else is never overwritten; the module fails
    before changing anything and names the queue.
  - Save and restore while no worker or producer runs, or messages taken or sent in between are not in the
    snapshot.
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
  description: Redis keys written by a restore (keys that already held the snapshot's content are left out).
  returned: when O(state=restored)
  type: list
  elements: str
  sample: ["low_priority", "default"]
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


def conflicts(current, snapshot):
    """Keys holding something other than nothing or exactly the snapshot's content."""
    found = []
    for queue, keys in snapshot["queues"].items():
        for key in keys:
            if current["lists"].get(key) and current["lists"][key] != snapshot["lists"][key]:
                found.append(f"queue {queue} (Redis key {key!r}) holds {len(current['lists'][key])} messages")
    if current["unacked"] and current["unacked"] != snapshot["unacked"]:
        found.append(f"the reserved messages ({snapshot['unacked_key']!r}) hold {len(current['unacked'])} entries")
    return found


def pending(current, snapshot):
    """Keys the restore writes: those not already holding the snapshot's content."""
    keys = [key for key, items in snapshot["lists"].items() if items and current["lists"].get(key) != items]
    for name in ("unacked", "unacked_index"):
        if snapshot[name] and current[name] != snapshot[name]:
            keys.append(snapshot[name + "_key"])
    return keys


def restore(client, snapshot, keys):
    pipe = client.pipeline(transaction=True)
    for key in keys:
        if key == snapshot["unacked_key"]:
            pipe.hset(key, mapping={decode(f): decode(v) for f, v in snapshot["unacked"].items()})
        elif key == snapshot["unacked_index_key"]:
            pipe.zadd(key, {decode(m): score for m, score in snapshot["unacked_index"].items()})
        else:
            pipe.rpush(key, *(decode(item) for item in snapshot["lists"][key]))
    pipe.execute()


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
    found = conflicts(current, snapshot)
    if found:
        module.fail_json(
            msg="the broker already holds messages that are not in the snapshot, so nothing was restored: "
                + "; ".join(found),
            path=path, broker=target.describe(), **counts(snapshot))
    written = pending(current, snapshot)
    if module.check_mode or not written:
        module.exit_json(changed=bool(written), restored_keys=written, path=path, broker=target.describe(),
                         **counts(snapshot))
    restore(client, snapshot, written)
    after = counts(read(client, list(snapshot["queues"]), steps, prefix))
    expected = counts(snapshot)
    if after != expected:
        module.fail_json(
            msg=f"after the restore the broker holds {after['messages']} messages, the snapshot {expected['messages']}",
            path=path, broker=target.describe(), restored_keys=written, **expected)
    module.exit_json(changed=bool(written), restored_keys=written, path=path, broker=target.describe(), **expected)


if __name__ == "__main__":
    main()
