"""The troubleshooting filters: what each piece of evidence becomes, and the redaction."""

import json

from ansible_collections.pilito.priority_queue.plugins.filter.troubleshoot import (
    REDACTED,
    disk_usage,
    finding_lines,
    findings,
    fix_plan,
    redact,
    redact_environment,
    troubleshoot_containers,
)

POOLS = {"celery_ai": {"name": "celery_ai", "queues": ["high_priority"], "concurrency": 2, "memory": "512m"},
         "celery_worker": {"name": "celery_worker", "queues": ["high_priority", "default", "low_priority"],
                           "concurrency": 4, "memory": "1g"}}


def container(service="celery_ai", state="running", **changes):
    item = dict(container="abc123", name=f"demo-{service}-1", service=service, state=state, health="healthy",
                exit_code=0, hostname=f"host-{service}", paused=False, restarting=False, oom_killed=False,
                restart_count=0, restart_policy="unless-stopped", memory_limit_mib=512.0, memory_used_mib=100.0,
                logs=[])
    item.update(changes)
    return item


def evidence(**changes):
    base = dict(containers=[container(), container("celery_worker", memory_limit_mib=1024.0)],
                workers={"celery_ai@host-celery_ai": {"pool": "celery_ai", "queues": ["high_priority"]},
                         "celery_worker@host-celery_worker": {"pool": "celery_worker",
                                                              "queues": ["high_priority", "default", "low_priority"]}},
                queues={}, broker={"used_memory": 10, "maxmemory": 0, "oom_rejections": 0}, disks=[],
                pools=POOLS, worker_services=["celery_ai", "celery_worker"], broker_service="redis", drift=[])
    base.update(changes)
    return base


def test_a_healthy_host_has_no_finding():
    assert findings(evidence()) == []


def test_passwords_in_urls_secret_names_and_known_secrets_are_redacted():
    text = ("consumer: Cannot connect to redis://:hunter22@redis:6379/0 DJANGO_SECRET_KEY=abc123xyz "
            "POSTGRES_PASSWORD: 's3cr3t-pw' user=pilito token=tok-1 and the raw value Zq9-known-secret")
    out = redact(text, secrets=["Zq9-known-secret"])
    for secret in ("hunter22", "abc123xyz", "s3cr3t-pw", "tok-1", "Zq9-known-secret"):
        assert secret not in out
    assert "redis://:" + REDACTED + "@redis:6379/0" in out
    assert "user=pilito" in out  # not a secret
    assert redact_environment(["POSTGRES_PASSWORD=pw1", "CELERY_BROKER_URL=redis://u:pw2@redis/0", "TZ=UTC"]) == {
        "POSTGRES_PASSWORD": REDACTED, "CELERY_BROKER_URL": f"redis://u:{REDACTED}@redis/0", "TZ": "UTC"}


def test_containers_join_compose_ps_inspect_stats_and_logs():
    ps = "\n".join(json.dumps(row) for row in [
        {"ID": "aaa111", "Name": "demo-celery_ai-1", "Service": "celery_ai", "State": "restarting", "ExitCode": 2,
         "Health": ""},
        {"ID": "bbb222", "Name": "demo-redis-1", "Service": "redis", "State": "running", "ExitCode": 0}])
    inspect = json.dumps([
        {"Id": "aaa111ffff", "Config": {"Hostname": "aaa111ffff"}, "RestartCount": 4,
         "State": {"Restarting": True, "OOMKilled": False, "Paused": False}, "HostConfig": {"Memory": 536870912}},
        {"Id": "bbb222ffff", "Config": {"Hostname": "bbb222ffff"}, "State": {},
         "HostConfig": {"Memory": 0, "RestartPolicy": {"Name": "always"}}}])
    stats = json.dumps({"ID": "bbb222ffff", "MemUsage": "12.5MiB / 23.4GiB"})
    logs = [{"item": "aaa111", "stdout": "", "stderr": "line one\nError: Unable to load celery application.\n"}]
    first, second = troubleshoot_containers(ps, inspect, stats, logs)
    assert (first["service"], first["restarting"], first["restart_count"], first["memory_limit_mib"]) == (
        "celery_ai", True, 4, 512.0)
    assert first["logs"] == ["line one", "Error: Unable to load celery application."]
    assert (second["memory_used_mib"], second["memory_limit_mib"], second["hostname"]) == (12.5, None, "bbb222ffff")
    assert (first["restart_policy"], second["restart_policy"]) == ("", "always")


def test_a_worker_that_cannot_start_is_named_with_the_cause_from_its_logs():
    logs = ["Traceback (most recent call last):", "ModuleNotFoundError: No module named 'nosuchapp'"]
    found = findings(evidence(containers=[container(state="restarting", restarting=True, restart_count=5, logs=logs,
                                                    exit_code=2)], drift=["celery_ai"]))
    assert found[0]["severity"] == "critical"
    assert found[0]["problem"] == "is not running: restarting (5 restarts), from a crash loop from a code or import error"
    assert found[0]["evidence"] == "Traceback (most recent call last): / ModuleNotFoundError: No module named 'nosuchapp'"
    assert found[1]["problem"].startswith("runs a container that differs from the deployed compose files")
    assert fix_plan(found) == dict(start=[], unpause=[], recreate=["celery_ai"], restart=[], policy=[])
    broker = findings(evidence(containers=[container(state="exited", exit_code=1, logs=[
        "consumer: Cannot connect to redis://redis:6379/0: Error 111 connecting to redis:6379. Connection refused."])]))
    assert "from the broker being unreachable" in broker[0]["problem"] and broker[0]["action"] == "start"


def test_an_oom_kill_is_told_from_another_sigkill_and_a_crash_loop_from_one_crash():
    oom = findings(evidence(containers=[container(state="exited", exit_code=137, oom_killed=True)]))[0]
    assert oom["problem"] == "is not running: exited with code 137, from the kernel's OOM killer (out of memory)"
    assert "raise memory of priority_queue_pools['celery_ai'] (now 512m) or lower its concurrency (now 2)" in oom["fix"]
    killed = findings(evidence(containers=[container(state="exited", exit_code=137)]))[0]
    assert "from a SIGKILL that was not for memory" in killed["problem"]
    assert "memory" not in killed["fix"] and killed["action"] == "start"
    assert killed["evidence"] == "exit code 137, OOMKilled false"
    looping = findings(evidence(containers=[container(state="exited", exit_code=137, restart_count=4)]))[0]
    assert "from a crash loop (4 restarts) from a SIGKILL" in looping["problem"]
    once = findings(evidence(containers=[container(state="exited", exit_code=137, restart_count=1)]))[0]
    assert "crash loop" not in once["problem"] and once["evidence"].endswith(", 1 restarts")
    restarting = findings(evidence(containers=[container(state="restarting", restarting=True, exit_code=137,
                                                         oom_killed=True, restart_count=7)]))[0]
    assert restarting["problem"] == ("is not running: restarting (7 restarts), from a crash loop from the kernel's "
                                     "OOM killer (out of memory)")
    assert restarting["action"] is None  # Docker restarts it already


def test_a_tasks_traceback_in_the_logs_of_a_killed_worker_is_not_why_it_is_down():
    logs = ["Traceback (most recent call last):", "ValueError: a task's own error"]
    killed = findings(evidence(containers=[container(state="exited", exit_code=137, logs=logs)]))[0]
    assert "SIGKILL" in killed["problem"] and killed["action"] == "start"
    looping = findings(evidence(containers=[container(state="restarting", restarting=True, exit_code=0,
                                                      restart_count=2, logs=logs)]))[0]
    assert "a crash loop from a code or import error" in looping["problem"] and looping["action"] is None


def test_what_plan_a_stopped_is_no_finding_and_a_container_without_restart_policy_is():
    stopped = container(state="exited", exit_code=0)
    assert findings(evidence(containers=[stopped], stopped_on_purpose=["celery_ai"])) == []
    assert findings(evidence(containers=[stopped]))[0]["action"] == "start"
    bare = findings(evidence(containers=[container("redis", restart_policy="")],
                             restart_policy_services=["redis", "celery_ai"]))
    assert [(item["subject"], item["severity"], item["action"]) for item in bare] == [
        ("service redis (demo-redis-1)", "warning", "policy")]
    assert "stays down" in bare[0]["problem"]
    assert fix_plan(bare)["policy"] == ["redis"]
    assert findings(evidence(containers=[container("redis", restart_policy="")])) == []  # not one it relies on


def test_an_engine_that_systemd_kills_before_the_pools_warm_shutdown_is_a_finding():
    def engine(said, seconds, managed=True):
        return findings(evidence(engine_stop={"managed": managed, "seconds": seconds, "said": said},
                                 stop_grace_seconds="90"))
    short = engine("1min 30s", 90)
    assert [(item["subject"], item["severity"], item["action"]) for item in short] == [
        ("the Docker engine", "warning", None)]
    assert "TimeoutStopSec=105" in short[0]["fix"] and "TimeoutStopUSec=1min 30s" in short[0]["evidence"]
    assert engine("1min 35s", 95) == []  # the grace and Docker's own 5 s fit
    assert engine("infinity", None) == []
    assert engine("", None, managed=False) == []  # no systemd: nothing but Docker stops the engine


def test_a_stopped_broker_is_started_by_the_fix():
    found = findings(evidence(containers=[container("redis", state="exited", exit_code=0)],
                              workers={}, workers_error="cannot ask the workers"))
    assert [(item["subject"], item["action"]) for item in found] == [
        ("service redis (demo-redis-1)", "start"), ("the workers", None)]


def test_a_worker_that_does_not_answer_is_restarted_warm_and_a_paused_one_unpaused():
    # Celery 5.2's own lines when its broker went away (a real worker's log, the warnings between cut).
    logs = ["[2026-12-06 02:37:18,659: INFO/MainProcess] Connected to redis://redis:6379/0",
            "[2026-12-06 02:37:19,686: INFO/MainProcess] celery_ai@0c6fa5ced20e ready.",
            "[2026-12-06 02:40:24,067: WARNING/MainProcess] consumer: Connection to broker lost. Trying to "
            "re-establish the connection...",
            "redis.exceptions.ConnectionError: Connection closed by server.",
            "[2026-12-06 02:40:30,080: ERROR/MainProcess] consumer: Cannot connect to redis://redis:6379/0: Error -2 "
            "connecting to redis:6379. Name or service not known..",
            "Trying again in 6.00 seconds... (3/100)"]
    silent = findings(evidence(workers={}, containers=[container(logs=logs)]))
    assert silent[0]["problem"] == "runs but its worker does not answer ping: it lost the broker and did not reconnect"
    assert silent[0]["evidence"].startswith("[2026-12-06 02:40:30,080: ERROR/MainProcess] consumer: Cannot connect")
    assert silent[0]["action"] == "restart"
    back = logs + ["[2026-12-06 02:40:37,001: INFO/MainProcess] Connected to redis://redis:6379/0"]
    assert findings(evidence(containers=[container(logs=back)])) == []
    paused = findings(evidence(containers=[container(paused=True)]))
    assert paused[0]["action"] == "unpause" and "paused" in paused[0]["problem"]


def test_messages_without_a_consumer_restart_the_pool_that_should_consume_them():
    queues = {"low_priority": {"total": 6, "waiting": 6, "unacked": 0, "consumers": None, "oldest_age_seconds": 12.0}}
    workers = {"celery_worker@h": {"pool": "celery_worker", "queues": ["high_priority", "default"]}}
    found = findings(evidence(queues=queues, workers=workers, containers=[]))
    assert found == [dict(
        severity="critical", subject="queue low_priority",
        problem="holds 6 messages and no worker consumes it, though pool celery_worker should",
        evidence="6 waiting, 0 reserved, the next has waited 12 s",
        fix="restart the pool warm (priority_queue_fix): it consumes its queues again", action="restart",
        services=["celery_worker"])]


def test_prefetch_above_concurrency_is_named_with_the_settings_that_fix_it():
    workers = {"stray@h": {"pool": "stray", "queues": ["low_priority"],
                           "stats": {"prefetch_count": 8, "pool": {"max-concurrency": 1}},
                           "active": [{"id": "1"}], "reserved": [{"id": str(n)} for n in range(7)]}}
    found = findings(evidence(workers=workers, containers=[]))
    assert found[0]["subject"] == "worker stray@h (no pool of the topology)"
    assert found[0]["evidence"] == "inspect: prefetch_count 8, concurrency 1, 1 running, 7 reserved"
    assert "worker_prefetch_multiplier 1 with task_acks_late" in found[0]["fix"]
    fine = {"celery_ai@h": {"pool": "celery_ai", "stats": {"prefetch_count": 2, "pool": {"max-concurrency": 2}}}}
    assert findings(evidence(workers=fine, containers=[])) == []


def test_memory_near_the_limit_and_killed_children_say_which_variable_to_change():
    workers = {"celery_ai@host-celery_ai": {"pool": "celery_ai", "queues": ["high_priority"],
                                            "stats": {"rusage": {"maxrss": 97280}}}}
    near = findings(evidence(containers=[container(memory_used_mib=480.0)], workers=workers))
    assert near[0]["severity"] == "warning"
    assert near[0]["evidence"] == "docker stats: 480 MiB / 512 MiB; the worker's peak (maxrss) 95 MiB"
    assert near[0]["problem"] == "uses 480 MiB of its 512 MiB limit (94%)"
    assert near[0]["fix"].startswith("raise memory of priority_queue_pools['celery_ai'] (now 512m)")
    killed = findings(evidence(containers=[container(logs=[
        "Process 'ForkPoolWorker-2' pid:31 exited with 'signal 9 (SIGKILL)'"])]))
    assert killed[0]["problem"] == "had a worker process killed (out of memory)"


def test_a_broker_short_of_memory_and_a_full_disk():
    found = findings(evidence(broker={"used_memory": 95, "maxmemory": 100, "maxmemory_policy": "noeviction",
                                      "oom_rejections": 0},
                              disks=disk_usage("Filesystem 1024-blocks Used Available Capacity Mounted on\n"
                                               "/dev/sda1 100 98 2 98% /\n", ["/srv/app"])))
    assert [(item["severity"], item["problem"]) for item in found] == [
        ("critical", "is 98% full"), ("warning", "uses 95% of its maxmemory")]
    rejected = findings(evidence(broker={"used_memory": 100, "maxmemory": 100, "oom_rejections": 3}))
    assert rejected[0]["problem"] == "is full and rejected 3 writes"
    # Rejected long ago, with room now: the counter alone is no finding.
    assert findings(evidence(broker={"used_memory": 10, "maxmemory": 100, "oom_rejections": 3})) == []


def test_the_report_is_worst_first_in_plain_words():
    found = findings(evidence(containers=[container(memory_used_mib=480.0), container("redis", state="exited")]))
    lines = finding_lines(found)
    assert lines[0].startswith("CRITICAL: service redis (demo-redis-1) is not running: exited with code 0")
    assert lines[1].startswith("WARNING: service celery_ai (demo-celery_ai-1) uses 480 MiB")


def test_drift_names_the_services_compose_would_recreate_or_create():
    from ansible_collections.pilito.priority_queue.plugins.filter.troubleshoot import compose_drift

    plan = {"containers": [{"Name": "pilito-demo-celery_ai-1", "Service": "celery_ai"},
                           {"Name": "pilito-demo-web-1", "Service": "web"}],
            "actions": [{"what": "container", "id": "pilito-demo-celery_ai-1", "status": "Recreate"},
                        {"what": "container", "id": "pilito-demo-web-1", "status": "Running"},
                        {"what": "container", "id": "pilito-demo-flower-1", "status": "Create"},
                        {"what": "network", "id": "pilito-demo_default", "status": "Create"}]}
    assert compose_drift(plan, "pilito-demo") == {"recreate": ["celery_ai"], "create": ["flower"]}


def test_a_dotenv_gives_its_secrets_and_its_names_alone():
    from ansible_collections.pilito.priority_queue.plugins.filter.troubleshoot import dotenv_names, dotenv_secrets

    text = ("# comment\nPOSTGRES_PASSWORD=pg-pw-1\nDJANGO_SECRET_KEY='dj-key-2'\n"
            "CELERY_BROKER_URL=redis://:broker-pw-3@redis:6379/0\nWEB_PORT=8000\nEMPTY=\n")
    assert dotenv_secrets(text) == ["pg-pw-1", "dj-key-2", "broker-pw-3"]
    assert dotenv_names(text) == (f"POSTGRES_PASSWORD={REDACTED}\nDJANGO_SECRET_KEY={REDACTED}\n"
                                  f"CELERY_BROKER_URL={REDACTED}\nWEB_PORT={REDACTED}\nEMPTY=\n")


def test_the_inspect_summary_keeps_the_state_and_redacts_the_environment():
    from ansible_collections.pilito.priority_queue.plugins.filter.troubleshoot import inspect_summary

    inspect = json.dumps([{"Name": "/demo-web-1", "RestartCount": 1, "HostConfig": {"Memory": 0},
                           "Config": {"Image": "app:1", "Cmd": ["sh", "-c", "run --token=abc-secret-tok"],
                                      "Env": ["POSTGRES_PASSWORD=pg-pw-1", "OTHER=pg-pw-1 inside", "TZ=UTC"]},
                           "State": {"Status": "running", "ExitCode": 0}, "Mounts": [{"Source": "/a", "Destination": "/b"}]}])
    summary = inspect_summary(inspect, secrets=["pg-pw-1"])["demo-web-1"]
    assert "pg-pw-1" not in json.dumps(summary) and "abc-secret-tok" not in json.dumps(summary)
    assert summary["environment"] == {"POSTGRES_PASSWORD": REDACTED, "OTHER": f"{REDACTED} inside", "TZ": "UTC"}
    assert summary["state"]["Status"] == "running" and summary["mounts"] == ["/a:/b"]


def test_logs_are_read_from_each_containers_last_start():
    from ansible_collections.pilito.priority_queue.plugins.filter.troubleshoot import log_targets

    inspect = json.dumps([{"Id": "aaa111fff", "State": {"StartedAt": "2026-12-06T02:37:18.1Z"}},
                          {"Id": "bbb222fff", "State": {"StartedAt": "0001-01-01T00:00:00Z"}}])
    assert log_targets(inspect, ["aaa111", "bbb222"]) == [dict(id="aaa111", since="2026-12-06T02:37:18.1Z"),
                                                          dict(id="bbb222", since="0")]
