# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Troubleshooting: the evidence read from Compose, Docker, the workers and the broker, turned into
findings (the problem, the evidence, the fix), and the redaction every report and bundle goes through."""

from __future__ import annotations

import base64
import json
import re

REDACTED = "[REDACTED]"
# Environment or setting names whose values are secrets.
SECRET_NAME = re.compile(r"(pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|credential|auth|"
                         r"access[_-]?key|dsn|cookie|session[_-]?key|signing)", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s\"']*):(?P<password>[^@/\s\"']+)@")
ASSIGNMENT = re.compile(r"(?P<name>\b[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>\s*[=:]\s*)(?P<quote>[\"']?)(?P<value>[^\s\"',;]+)")

CODE_ERROR = re.compile(r"(ModuleNotFoundError|ImportError|SyntaxError|IndentationError|NameError|"
                        r"Unable to load celery application|ImproperlyConfigured|Traceback \(most recent call last\))")
BROKER_ERROR = re.compile(r"(Cannot connect to \w+://|Error \d+ connecting to|Connection refused|"
                          r"Name or service not known|Temporary failure in name resolution|"
                          r"Connection to broker lost)")
RECONNECTED = re.compile(r"\bConnected to \w+://")
CHILD_KILLED = re.compile(r"(signal 9 \(SIGKILL\)|WorkerLostError|exited with 'signal 9|MemoryError)")

SEVERITY = {"critical": 0, "warning": 1}


def redact(text, secrets=()):
    """Text with every password in a URL, every value of a secret-looking name and every known
    secret replaced by the marker."""
    text = str(text)
    for secret in sorted({s for s in secrets or () if s and len(str(s)) >= 4}, key=len, reverse=True):
        text = text.replace(str(secret), REDACTED)
    text = URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)

    def assignment(match):
        if SECRET_NAME.search(match["name"]) and match["value"] != REDACTED:
            return f"{match['name']}{match['sep']}{match['quote']}{REDACTED}"
        return match.group(0)

    return ASSIGNMENT.sub(assignment, text)


def redact_environment(environment, secrets=()):
    """A container's environment (a dict, or KEY=value lines) with secret values replaced."""
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {name: (REDACTED if SECRET_NAME.search(name) and value else redact(value, secrets))
            for name, value in (environment or {}).items()}


def _json_lines(text):
    """`docker ... --format json` output: one JSON array, or one object per line; a list as it is."""
    if isinstance(text, list):
        return text
    text = (text or "").strip()
    if not text:
        return []
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def _mib(size):
    """Docker's "136.6MiB" (or "1.2GiB", "512kB") in MiB."""
    match = re.match(r"^\s*([\d.]+)\s*([kmgt]?i?b)\s*$", str(size), re.IGNORECASE)
    if not match:
        return None
    units = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 1024, "mib": 1024 ** 2,
             "gib": 1024 ** 3, "tib": 1024 ** 4}
    return round(float(match.group(1)) * units[match.group(2).lower()] / 1024 ** 2, 1)


def troubleshoot_containers(ps_output, inspect_output, stats_output="", logs_results=None):
    """Each container of the project: its service and state from `compose ps`, what `docker inspect`
    adds (host name, paused, OOM-killed, restarts, memory limit), its memory use from `docker stats`
    and its last log lines (a loop's registered results, item = container id)."""
    containers = []
    inspected = {item.get("Id", ""): item for item in _json_lines(inspect_output)}
    stats = {row.get("ID", row.get("Container", "")): row for row in _json_lines(stats_output)}
    logs = {}
    for result in logs_results or []:
        lines = (result.get("stdout", "") + "\n" + result.get("stderr", "")).splitlines()
        item = result.get("item", "")
        logs[str(item.get("id", "") if isinstance(item, dict) else item)] = [line for line in lines if line.strip()]
    for row in _json_lines(ps_output):
        short = row.get("ID", "")
        full = next((key for key in inspected if key.startswith(short)), "")
        details = inspected.get(full, {})
        state = details.get("State", {})
        usage = stats.get(short) or stats.get(full[:12]) or {}
        used = _mib(str(usage.get("MemUsage", "")).split("/", maxsplit=1)[0]) if usage else None
        limit = details.get("HostConfig", {}).get("Memory") or 0
        containers.append(dict(
            container=short, name=row.get("Name", ""), service=row.get("Service", ""),
            state=row.get("State", ""), health=row.get("Health", ""), exit_code=row.get("ExitCode", 0),
            hostname=details.get("Config", {}).get("Hostname", ""),
            paused=bool(state.get("Paused")), restarting=bool(state.get("Restarting")) or row.get("State") == "restarting",
            oom_killed=bool(state.get("OOMKilled")), restart_count=details.get("RestartCount", 0),
            restart_policy=((details.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "",
            memory_limit_mib=round(limit / 1024 ** 2, 1) if limit else None, memory_used_mib=used,
            logs=logs.get(short, []) or logs.get(full, []),
        ))
    return containers


def log_targets(inspect_output, ids):
    """[{id, since}] for `docker logs --since`: each container's lines since it last started, so a
    problem fixed by a restart is not reported again from the lines before it."""
    started = {item.get("Id", ""): (item.get("State") or {}).get("StartedAt", "") for item in _json_lines(inspect_output)}
    targets = []
    for short in ids or []:
        since = next((value for full, value in started.items() if full.startswith(short)), "")
        targets.append(dict(id=short, since=since if since and not since.startswith("0001-") else "0"))
    return targets


def compose_drift(plan, project=""):
    """From a docker_compose_v2 check-mode plan: the services whose containers Compose would recreate
    (they differ from the deployed files) or create (they have none; named <project>-<service>-<n>)."""
    services = {item.get("Name"): item.get("Service") for item in (plan or {}).get("containers") or []}
    drift = {"recreate": [], "create": []}
    for action in (plan or {}).get("actions") or []:
        if action.get("what") != "container":
            continue
        name = action.get("id", "")
        service = services.get(name) or re.sub(r"[-_]\d+$", "", name.removeprefix(f"{project}-"))
        if action.get("status") in ("Recreate", "Recreated") and service not in drift["recreate"]:
            drift["recreate"].append(service)
        elif action.get("status") in ("Create", "Created") and service not in drift["create"]:
            drift["create"].append(service)
    return drift


def _last(lines, pattern):
    """The last line matching, with its index; (None, -1) when none does."""
    for index in range(len(lines) - 1, -1, -1):
        if pattern.search(lines[index]):
            return lines[index], index
    return None, -1


def _finding(severity, subject, problem, evidence, fix, action=None, services=()):
    """action: what priority_queue_fix may do (start, recreate, unpause, restart, policy) to these services."""
    return dict(severity=severity, subject=subject, problem=problem, evidence=evidence, fix=fix,
                action=action, services=list(services) if action else [])


# Restarts by the container's policy after which a crash is a crash loop, not a single crash.
CRASH_LOOP_RESTARTS = 3


def _why_not_running(container, pool):
    """The cause of an exited or restarting container, from Docker's state and its last log lines,
    and whether starting it again is the fix (not for code errors, nor while Docker restarts it)."""
    logs, code = container["logs"], container["exit_code"]
    restarts = container["restart_count"] or 0
    loop = ("a crash loop from " if container["restarting"]
            else f"a crash loop ({restarts} restarts) from " if restarts >= CRASH_LOOP_RESTARTS else "")
    counted = f", {restarts} restarts" if restarts else ""
    startable = not container["restarting"]
    if container["oom_killed"]:
        limit = f" (limit {container['memory_limit_mib']:g} MiB)" if container["memory_limit_mib"] else ""
        fix = (f"raise memory of priority_queue_pools[{pool['name']!r}] (now {pool.get('memory')}) or lower its "
               f"concurrency (now {pool.get('concurrency')})" if pool else "raise the service's memory limit")
        return (loop + "the kernel's OOM killer (out of memory)", f"OOMKilled true, exit code {code}{limit}{counted}",
                fix + ("; start it meanwhile (priority_queue_fix)" if startable else ""), startable)
    killed = ("a SIGKILL that was not for memory (docker kill, a stop that outlasted its grace period, the engine "
              "stopping, a crash of the host)", f"exit code 137, OOMKilled false{counted}",
              "start it (priority_queue_fix); with a restart policy it comes back by itself", startable)
    # Killed or stopped while it ran: a traceback in its logs is a task's, not why it is down.
    if code == 137 and not container["restarting"]:
        return (loop + killed[0],) + killed[1:]
    if code in (0, 143) and not container["restarting"]:
        return (f"a stop (exit code {code}: stopped, not crashed)", (logs[-1] if logs else "no log lines"),
                "start it (priority_queue_fix)", True)
    line, _index = _last(logs, CODE_ERROR)
    if line:
        return (loop + "a code or import error", " / ".join(logs[-3:]),
                "roll back (rollback.yml --tags plan_b), or fix the release and run deploy.yml again", False)
    if code == 137:
        return (loop + killed[0],) + killed[1:]
    line, _index = _last(logs, BROKER_ERROR)
    if line:
        return (loop + "the broker being unreachable", line,
                "start the broker, or check priority_queue_broker_service and the broker URL in the app's settings; "
                "then start it (priority_queue_fix)", startable)
    return (loop + "an unknown cause", (logs[-1] if logs else "no log lines") + f" (exit code {code}{counted})",
            "read its logs: docker compose logs " + container["service"] + "; start it (priority_queue_fix)",
            startable)


def findings(evidence):
    """Every problem the evidence shows, worst first; each with the evidence, the fix, and the action
    troubleshoot.yml may take for it with priority_queue_fix (none where no action is safe).
    evidence: containers (troubleshoot_containers), workers (celery_worker_info's, with stats, active
    and reserved), workers_error, queues (celery_queue_check's), broker (celery_broker_info's),
    broker_error, disks ([{path, used_percent}]), pools ({name: pool}), worker_services,
    broker_service, drift (services whose containers differ from the deployed files), missing (services
    declared but without a container), restart_policy_services (those that must come back by themselves),
    stopped_on_purpose (services rollback plan_a stopped), engine_stop (engine_stop_timeout's) and
    stop_grace_seconds (the pools' stop_grace_period), broker_wide (this host reports the broker's and
    workers' findings), secrets (values to redact besides what looks secret), limits."""
    found = []
    pools = evidence.get("pools") or {}
    limits = dict(memory_percent=90, disk_percent=90, broker_memory_percent=90)
    limits = {name: float(value) for name, value in dict(limits, **(evidence.get("limits") or {})).items()}
    worker_services = set(evidence.get("worker_services") or [])
    workers = evidence.get("workers") or {}
    answering_hosts = {node.split("@", 1)[-1] for node in workers}
    drift = set(evidence.get("drift") or [])
    containers = evidence.get("containers") or []
    stopped_on_purpose = set(evidence.get("stopped_on_purpose") or [])
    must_come_back = set(evidence.get("restart_policy_services") or [])

    for container in containers:
        service, pool = container["service"], pools.get(container["service"])
        subject = f"service {service} ({container['name']})"
        if container["state"] in ("exited", "dead", "created") or container["restarting"]:
            if service in stopped_on_purpose and not container["restarting"]:
                continue  # rollback plan_a stopped it; the next deploy starts it
            cause, said, fix, startable = _why_not_running(container, pool)
            state = (f"restarting ({container['restart_count']} restarts)" if container["restarting"]
                     else f"{container['state']} with code {container['exit_code']}")
            action = "start" if startable else None
            if service in drift:
                fix, action = "recreate it from the deployed files (see the finding on its container)", None
            found.append(_finding("critical", subject, f"is not running: {state}, from {cause}", said, fix,
                                  action, [service]))
            continue
        if service in must_come_back and container["restart_policy"] in ("", "no"):
            found.append(_finding("warning", subject, "runs with no restart policy: after a crash, an engine restart "
                                  "or a reboot it stays down", "docker inspect: HostConfig.RestartPolicy.Name "
                                  f"{container['restart_policy'] or 'empty'}",
                                  "give it unless-stopped in place (priority_queue_fix, or deploy.yml: docker update, "
                                  "no restart)", "policy", [service]))
        if container["paused"]:
            found.append(_finding("critical", subject, "is paused: it takes no task and answers no one",
                                  "docker inspect: State.Paused true", "unpause it (priority_queue_fix)", "unpause",
                                  [service]))
            continue
        if service in worker_services and container["state"] == "running" and not evidence.get("workers_error"):
            lost, lost_at = _last(container["logs"], BROKER_ERROR)
            _back, back_at = _last(container["logs"], RECONNECTED)
            if service in drift:
                pass  # recreated from the deployed files, it answers or another finding says why not
            elif container["hostname"] not in answering_hosts:
                reason = ("it lost the broker and did not reconnect" if lost and back_at < lost_at
                          else "it is stuck or too busy to answer")
                found.append(_finding("critical", subject, f"runs but its worker does not answer ping: {reason}",
                                      lost or (container["logs"][-1] if container["logs"] else "no log lines"),
                                      "restart it warm (priority_queue_fix): running tasks finish first",
                                      "restart", [service]))
            elif lost and back_at < lost_at:
                found.append(_finding("warning", subject, "lost the broker and has not said it reconnected", lost,
                                      "restart it warm (priority_queue_fix): Celery 5.2 workers can stop consuming "
                                      "after a reconnect", "restart", [service]))
        stats = next((worker.get("stats") or {} for node, worker in workers.items()
                      if node.split("@", 1)[-1] == container["hostname"]), {})
        memory = _memory_finding(container, pool, limits, stats)
        if memory:
            found.append(memory)

    for service in sorted(drift):
        found.append(_finding("critical", f"service {service}", "runs a container that differs from the deployed "
                              "compose files (changed by hand, or started with other files)",
                              "docker compose up --dry-run would recreate it",
                              "recreate it from the deployed files (priority_queue_fix, or deploy.yml)", "recreate",
                              [service]))
    for service in evidence.get("missing") or []:
        found.append(_finding("critical", f"service {service}", "has no container, though the deployed compose "
                              "files declare it", "docker compose up --dry-run would create it",
                              "create it from the deployed files (priority_queue_fix, or deploy.yml)", "recreate",
                              [service]))
    # What the broker and the workers say is read once, on the app host (broker_wide).
    if evidence.get("broker_wide", True):
        if evidence.get("workers_error"):
            found.append(_finding("critical", "the workers", "cannot be asked through the broker",
                                  evidence["workers_error"], "see the broker's finding; start or fix the broker first"))
        if not evidence.get("workers_error"):
            found += _queue_findings(evidence.get("queues") or {}, workers, pools)
        found += _prefetch_findings(workers, pools)
        found += _broker_findings(evidence.get("broker"), evidence.get("broker_error"), limits)
    engine, grace = evidence.get("engine_stop") or {}, float(evidence.get("stop_grace_seconds") or 0)
    if engine.get("managed") and engine.get("seconds") is not None and engine["seconds"] < grace + 5:
        found.append(_finding("warning", "the Docker engine", f"is killed by systemd {engine['said']} into a stop "
                              f"or a reboot, before the pools' warm shutdown ({grace:g} s, and Docker's 5 s) ends: "
                              "their running tasks are killed with it and wait for redelivery",
                              f"systemctl show docker.service: TimeoutStopUSec={engine['said']}",
                              "deploy.yml (it writes the drop-in /etc/systemd/system/docker.service.d/"
                              f"pilito-priority-queue.conf with TimeoutStopSec={grace + 15:g}), or write it "
                              "yourself and systemctl daemon-reload"))
    for disk in evidence.get("disks") or []:
        if disk["used_percent"] >= limits["disk_percent"]:
            found.append(_finding("critical" if disk["used_percent"] >= 97 else "warning", f"disk of {disk['path']}",
                                  f"is {disk['used_percent']}% full", f"df: {disk['used_percent']}% used",
                                  "free space (docker image prune, old backups in priority_queue_backup_dir) "
                                  "or grow the disk"))
    for item in found:
        item["evidence"] = redact(item["evidence"], evidence.get("secrets"))
    return sorted(found, key=lambda item: SEVERITY[item["severity"]])


def _memory_finding(container, pool, limits, stats):
    """A worker process killed for memory since the container started, or memory near the limit; with
    the worker's own peak (maxrss, from its stats) where it answered."""
    killed, _index = _last(container["logs"], CHILD_KILLED)
    if pool is None:
        fix = "raise the service's memory limit or lower its concurrency"
    else:
        fix = (f"raise memory of priority_queue_pools[{pool['name']!r}] (now {pool.get('memory')}) or lower its "
               f"concurrency (now {pool.get('concurrency')})")
    maxrss = (stats.get("rusage") or {}).get("maxrss")
    peak = f"; the worker's peak (maxrss) {maxrss / 1024:.0f} MiB" if isinstance(maxrss, (int, float)) else ""
    used, limit = container["memory_used_mib"], container["memory_limit_mib"]
    if killed and container["state"] == "running":
        return _finding("critical", f"service {container['service']} ({container['name']})",
                        "had a worker process killed (out of memory)", killed + peak, fix)
    if used is not None and limit and used / limit * 100 >= limits["memory_percent"]:
        return _finding("warning", f"service {container['service']} ({container['name']})",
                        f"uses {used:g} MiB of its {limit:g} MiB limit ({used / limit * 100:.0f}%)",
                        f"docker stats: {used:g} MiB / {limit:g} MiB{peak}", fix)
    return None


def _queue_findings(queues, workers, pools):
    found = []
    for queue, figure in queues.items():
        consumers = figure.get("consumers")
        if consumers is None:  # counted from the workers' answers
            consumers = sum(1 for worker in workers.values() if queue in (worker.get("queues") or []))
        if consumers == 0 and figure.get("total", 0) > 0:
            owners = sorted(name for name, pool in pools.items() if queue in pool.get("queues", []))
            running = sorted({node.split("@")[0] for node in workers} & set(owners))
            if running:
                problem = (f"holds {figure['total']} messages and no worker consumes it, though pool "
                           f"{', '.join(running)} should")
                fix, action = ("restart the pool warm (priority_queue_fix): it consumes its queues again",
                               "restart")
            else:
                problem = f"holds {figure['total']} messages and no worker consumes it"
                fix, action = (f"start the pools that consume it ({', '.join(owners) or 'none in the topology'}): "
                               "deploy.yml, or rollback.yml --tags plan_b to return to the old queue"), None
            evidence = (f"{figure['waiting']} waiting, {figure['unacked']} reserved"
                        + (f", the next has waited {figure['oldest_age_seconds']:.0f} s"
                           if figure.get("oldest_age_seconds") is not None else ""))
            found.append(_finding("critical", f"queue {queue}", problem, evidence, fix, action, running))
    return found


def _prefetch_findings(workers, pools):
    found = []
    for node, worker in sorted(workers.items()):
        stats = worker.get("stats") or {}
        prefetch = stats.get("prefetch_count")
        concurrency = (stats.get("pool") or {}).get("max-concurrency")
        if not isinstance(prefetch, int) or not isinstance(concurrency, int) or prefetch <= concurrency:
            continue
        reserved, active = len(worker.get("reserved") or []), len(worker.get("active") or [])
        pool = worker.get("pool", node.split("@")[0])
        where = f"pool {pool}" if pool in pools else f"worker {node} (no pool of the topology)"
        found.append(_finding(
            "critical" if reserved and active < concurrency else "warning", where,
            f"prefetches {prefetch} messages for {concurrency} processes: tasks wait in its buffer behind running "
            f"ones while other workers could take them",
            f"inspect: prefetch_count {prefetch}, concurrency {concurrency}, {active} running, {reserved} reserved",
            "the topology's settings, worker_prefetch_multiplier 1 with task_acks_late: does it load the rendered "
            "celery_priority config (its PYTHONPATH), and does its command set --prefetch-multiplier?"))
    return found


def _broker_findings(broker, error, limits):
    if error:
        return [_finding("critical", "the broker", "does not answer", error,
                         "start the broker (priority_queue_fix starts its service) and check the broker URL")]
    if not broker:
        return []
    used, limit = broker.get("used_memory", 0), broker.get("maxmemory", 0)
    # Rejections are counted since the broker started: they matter while it is still short of memory.
    if not limit or used / limit * 100 < limits["broker_memory_percent"]:
        return []
    evidence = (f"used_memory {used}, maxmemory {limit}, policy {broker.get('maxmemory_policy')}, "
                f"writes refused for lack of memory (errorstat_OOM) {broker.get('oom_rejections', 0)}")
    fix = "raise the broker's maxmemory, or give it more memory, and find what fills it (a queue no worker consumes?)"
    if broker.get("oom_rejections"):
        return [_finding("critical", "the broker", f"is full and rejected {broker['oom_rejections']} writes", evidence,
                         fix)]
    return [_finding("critical" if used >= limit else "warning", "the broker",
                     f"uses {used / limit * 100:.0f}% of its maxmemory", evidence, fix)]


def fix_plan(found):
    """The services each safe action applies to: {start, unpause, recreate, restart, policy: [service, ...]}."""
    plan = {action: [] for action in ("start", "unpause", "recreate", "restart", "policy")}
    for item in found:
        for service in item.get("services") or []:
            if item.get("action") in plan and service not in plan[item["action"]]:
                plan[item["action"]].append(service)
    plan["restart"] = [service for service in plan["restart"] if service not in plan["recreate"]]
    return plan


def inspect_summary(inspect_output, secrets=()):
    """What a support bundle keeps of `docker inspect`: per container its image, command, state,
    restarts, memory limit, mounts, and its environment with every secret value redacted."""
    summary = {}
    for item in _json_lines(inspect_output):
        config, state = item.get("Config") or {}, item.get("State") or {}
        summary[item.get("Name", "").lstrip("/")] = dict(
            image=config.get("Image"), command=redact(" ".join(config.get("Cmd") or []), secrets),
            state={key: state.get(key) for key in ("Status", "Restarting", "OOMKilled", "ExitCode", "StartedAt",
                                                   "FinishedAt", "Paused")},
            restart_count=item.get("RestartCount"), memory_limit=(item.get("HostConfig") or {}).get("Memory"),
            mounts=[f"{mount.get('Source')}:{mount.get('Destination')}" for mount in item.get("Mounts") or []],
            environment=redact_environment(config.get("Env") or [], secrets),
        )
    return summary


def dotenv_secrets(text):
    """The values of a .env that must never leave the host: those of secret-looking names, and the
    passwords inside URLs."""
    secrets = []
    for line in (text or "").splitlines():
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        name, value = line.split("=", 1)
        value = value.strip().strip("'\"")
        if SECRET_NAME.search(name) and value:
            secrets.append(value)
        secrets += [match["password"] for match in URL_PASSWORD.finditer(value)]
    return secrets


def dotenv_names(text):
    """A .env as its names alone, each value replaced by the marker (or empty where it was)."""
    lines = []
    for line in (text or "").splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            name, value = line.split("=", 1)
            lines.append(f"{name}={REDACTED if value.strip() else ''}")
    return "\n".join(lines) + "\n"


def support_logs(results):
    """`docker logs` results of a loop over compose's containers -> {logs/<container>.log: text}."""
    logs = {}
    for result in results or []:
        item = result.get("item") or {}
        name = item.get("Name") or str(item)
        text = result.get("stdout", "")
        if result.get("stderr"):
            text += ("\n" if text else "") + result["stderr"]
        logs[f"logs/{name}.log"] = text + "\n"
    return logs


def support_files(results):
    """slurp results of a loop over file paths -> {files/<name>: text} (files that were not there left out)."""
    files = {}
    for result in results or []:
        if result.get("content"):
            name = str(result.get("item") or result.get("source")).rsplit("/", 1)[-1]
            files[f"files/{name}"] = base64.b64decode(result["content"]).decode("utf-8", errors="replace")
    return files


def finding_lines(found):
    """The report, worst first, one finding per line in plain words."""
    return [f"{item['severity'].upper()}: {item['subject']} {item['problem']}. "
            f"Evidence: {str(item['evidence']).rstrip('. ')}. Fix: {item['fix']}." for item in found]


def disk_usage(df_output, paths):
    """`df -P` lines for the paths, as [{path, used_percent}]."""
    rows = [line.split() for line in (df_output or "").splitlines()[1:] if line.strip()]
    return [dict(path=path, used_percent=int(row[4].rstrip("%"))) for path, row in zip(paths, rows)
            if len(row) >= 5 and row[4].rstrip("%").isdigit()]


class FilterModule:
    def filters(self):
        return {
            "redact": redact,
            "redact_environment": redact_environment,
            "inspect_summary": inspect_summary,
            "dotenv_secrets": dotenv_secrets,
            "dotenv_names": dotenv_names,
            "support_logs": support_logs,
            "support_files": support_files,
            "troubleshoot_containers": troubleshoot_containers,
            "compose_ps": _json_lines,
            "compose_drift": compose_drift,
            "log_targets": log_targets,
            "troubleshoot_findings": findings,
            "finding_lines": finding_lines,
            "fix_plan": fix_plan,
            "disk_usage": disk_usage,
        }
