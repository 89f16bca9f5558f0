#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: celery_broker_durability
short_description: Check that a Redis broker keeps Celery's queued messages over a restart and under memory pressure
version_added: 0.1.0
description:
  - Reads the broker's persistence and eviction settings (C(appendonly), C(save), C(maxmemory-policy),
    C(maxmemory)) and fails, naming the setting to change, on a broker that would drop queued work.
  - V(restart_loss) - neither the append-only file nor save points are on, so everything queued is gone when
    the broker restarts (a host reboot, an out-of-memory kill, an upgrade).
  - V(eviction) - C(maxmemory-policy) is not C(noeviction), so once C(maxmemory) is reached Redis deletes keys,
    and a queue or the reserved messages are keys like any other. With C(noeviction) producers get an error
    instead, which they see.
  - Save points without the append-only file keep what the last snapshot held; a crash loses what came after.
    That is reported as a warning, not a failure.
  - Reads C(CONFIG GET); where a managed broker refuses it, C(INFO), which does not show the save points.
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
  accept:
    description:
      - Risks the operator accepts, which then only warn. Accept one only for a broker whose queues may be lost
        (a test bed, or work that producers send again).
    type: list
    elements: str
    choices: [restart_loss, eviction]
    default: []
"""

EXAMPLES = r"""
- name: Fail unless the broker keeps its queues
  pilito.priority_queue.celery_broker_durability:
    broker_url: "{{ vault_celery_broker_url }}"

- name: A test bed whose broker keeps nothing on disk
  pilito.priority_queue.celery_broker_durability:
    broker_url: redis://127.0.0.1:6379/0
    accept: [restart_loss]
"""

RETURN = r"""
settings:
  description: The settings read; a value the broker did not show is V(null).
  returned: success or when a risk is found
  type: dict
  sample: {"appendonly": "no", "save": "", "maxmemory_policy": "noeviction", "maxmemory": 0, "source": "CONFIG GET"}
risks:
  description: Each risk found, with what to change, whether accepted or not.
  returned: success or when a risk is found
  type: list
  elements: dict
  sample: [{"risk": "restart_loss", "accepted": true, "message": "the broker keeps nothing on disk ..."}]
memory:
  description: The broker's memory now - C(used_memory) and C(maxmemory) in bytes (0 is no limit), and
    C(oom_rejections), the commands it refused for lack of memory since it started (INFO errorstats) - and
    C(version), the Redis version.
  returned: success or when a risk is found
  type: dict
  sample: {"used_memory": 1048576, "maxmemory": 0, "oom_rejections": 0, "version": "7.0.15"}
broker:
  description: The broker checked, password masked.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import (
    broker_argument_spec,
    connect,
)

RISKS = ("restart_loss", "eviction")


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def read_settings(client):
    """The broker's persistence and eviction settings, from CONFIG GET or, where refused, INFO."""
    try:
        config = {}
        for name in ("appendonly", "save", "maxmemory-policy", "maxmemory"):
            config.update({_text(key): _text(value) for key, value in client.config_get(name).items()})
        return dict(appendonly=config.get("appendonly"), save=config.get("save"),
                    maxmemory_policy=config.get("maxmemory-policy"), maxmemory=int(config.get("maxmemory") or 0),
                    source="CONFIG GET")
    except Exception:  # a managed broker may refuse CONFIG (renamed or forbidden); INFO is allowed
        info = {**client.info("persistence"), **client.info("memory")}
        aof = info.get("aof_enabled")
        return dict(appendonly=None if aof is None else ("yes" if int(aof) else "no"), save=None,
                    maxmemory_policy=info.get("maxmemory_policy"), maxmemory=int(info.get("maxmemory") or 0),
                    source="INFO")


def read_memory(client):
    """Memory used and allowed, and the writes refused for lack of it (Redis 6.2 and newer count them)."""
    info = client.info("memory")
    try:
        errors = client.info("errorstats")
    except Exception:  # before Redis 6.2 there is no such section
        errors = {}
    oom = errors.get("errorstat_OOM") or {}
    return dict(used_memory=int(info.get("used_memory", 0)), maxmemory=int(info.get("maxmemory", 0)),
                oom_rejections=int(oom.get("count", 0)) if isinstance(oom, dict) else 0,
                version=str(client.info("server").get("redis_version", "")))


def risks_of(settings):
    """(risk, message) for each way the broker would drop queued work; warnings apart."""
    risks, warnings = [], []
    aof, save = settings["appendonly"], settings["save"]
    if aof != "yes":
        if save is None:
            risks.append(("restart_loss", "the broker's save points cannot be read (CONFIG GET refused) and "
                          "appendonly is not on, so queued messages may be lost when it restarts: set "
                          "appendonly yes"))
        elif not save.strip():
            risks.append(("restart_loss", "the broker keeps nothing on disk (appendonly no, save \"\"): every "
                          "queued message is lost when it restarts. Set appendonly yes (redis-server "
                          "--appendonly yes, on a volume that outlives the container)"))
        else:
            warnings.append(f"the broker saves snapshots only (save \"{save}\", appendonly no): a crash loses the "
                            f"messages queued since the last one; appendonly yes keeps them")
    policy = settings["maxmemory_policy"]
    if policy != "noeviction":
        limit = f"maxmemory {settings['maxmemory']} bytes" if settings["maxmemory"] else "maxmemory, once set,"
        risks.append(("eviction", f"maxmemory-policy is {policy}: when the broker reaches {limit} it deletes keys, "
                      f"queued messages among them. Set maxmemory-policy noeviction"))
    return risks, warnings


def main():
    argument_spec = broker_argument_spec()
    argument_spec.update(accept=dict(type="list", elements="str", choices=list(RISKS), default=[]))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    target, client = connect(module)
    try:
        settings = read_settings(client)
        memory = read_memory(client)
    except Exception as exc:  # redis errors: the message never holds the password
        module.fail_json(msg=f"cannot read the settings of the broker at {target.describe()}: {exc}",
                         broker=target.describe())
    found, warnings = risks_of(settings)
    accepted = set(module.params["accept"])
    risks = [dict(risk=risk, accepted=risk in accepted, message=message) for risk, message in found]
    for warning in warnings:
        module.warn(warning)
    for risk in risks:
        if risk["accepted"]:
            module.warn(f"accepted: {risk['message']}")
    report = dict(changed=False, settings=settings, risks=risks, memory=memory, broker=target.describe())
    refused = [risk for risk in risks if not risk["accepted"]]
    if refused:
        module.fail_json(msg="; ".join(f"{risk['message']}; or accept the risk (accept: [{risk['risk']}])" for risk in refused),
                         **report)
    module.exit_json(**report)


if __name__ == "__main__":
    main()
