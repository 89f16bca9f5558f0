"""After deploy.yml over SSH, the pools placed by inventory group: the AI pool on mh-ai, the general
pool on mh-app and mh-workers; each host with its own engine and /usr/bin/python3; the collection
as installed from its tarball. A producer on the app host sends the demo's tasks through its web
API from the first test to the last: every task then ran exactly once, and the AI tasks sent after
each step waited for a worker less than verify's threshold."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import redis
from conftest import TaskTrace


ROOT = Path(__file__).resolve().parents[3]
INSTALLED = ROOT / "build" / "multihost" / "collections"
INVENTORY = Path(__file__).resolve().parents[1] / "inventory" / "hosts.yml"
LIBRARY_PACKAGES = ["python3-redis", "python3-celery", "python3-requests", "python3-psycopg2"]
HOSTS = ["mh-app", "mh-ai", "mh-workers"]
BROKER = "redis://172.30.99.11:6379"  # the app host publishes it on the hosts' network
APP_COMPOSE = "docker compose --project-directory /srv/pilito-demo/app -f /srv/pilito-demo/app/docker-compose.yml"
LATENCY_THRESHOLD_SECONDS = 0.5  # priority_queue_verify_latency_threshold_seconds in group_vars
STEPS = []  # (label, wall-clock start, end, settled) of each playbook run, for the latency windows
AI_WAITS = {}  # AI reply task id -> (sent at, seconds it waited for a worker), read after each step
SETTLE_SECONDS = 6  # after a deploy or a rollback, the AI replies sent in this window are "after it"


def playbook(name, *args):
    """Run one of the installed collection's playbooks by its name against the scenario's hosts; its
    wall time goes to build/multihost/playbook_times.jsonl."""
    start, wall_start = time.monotonic(), time.time()
    out = subprocess.run(
        ["ansible-playbook", "-i", str(INVENTORY), f"pilito.priority_queue.{name}", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={
            **os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(INSTALLED),
            "PILITO_MULTIHOST_DIR": str(ROOT / "build" / "multihost"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
        },
        check=False,
    )
    out.text = " ".join((out.stdout + out.stderr).split())
    end = time.time()
    with (ROOT / "build" / "multihost" / "playbook_times.jsonl").open("a") as times:
        times.write(json.dumps({"playbook": name, "args": list(args), "rc": out.returncode,
                                "seconds": round(time.monotonic() - start, 1)}) + "\n")
    # The window after a deploy or a rollback that changed the hosts, then every AI result so far (the
    # results live in the broker's Redis, which plan C in full takes down).
    settled = name in ("deploy", "rollback") and out.returncode == 0
    if settled:
        time.sleep(SETTLE_SECONDS + 1)
    AI_WAITS.update(ai_waits())
    STEPS.append((f"{len(STEPS) + 1}. {name} {' '.join(args)}".strip(), wall_start, end, settled))
    return out


def on(host_name, command):
    return subprocess.run(
        ["docker", "exec", f"pilito-{host_name}", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def installed_packages(host_name):
    out = on(host_name, "dpkg-query -W -f '${Package} ${Status}\\n' " + " ".join(LIBRARY_PACKAGES) + " 2>/dev/null")
    return {line.split()[0] for line in out.stdout.splitlines() if line.endswith("install ok installed")}


def services_running(host_name):
    out = on(host_name, "docker ps --format '{{.Label \"com.docker.compose.service\"}}'")
    assert out.returncode == 0, out.stderr
    return sorted(out.stdout.split())


class Producer:
    """producer.py on the app host (its own Python, stdlib only), sending across the three queues."""

    def __init__(self, prefix, rate):
        self.prefix = prefix
        on("mh-app", "rm -f /tmp/stop-producer")
        # Ended by stop(), not by a with block: it runs from the first test to the last.
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with
            ["docker", "exec", "-i", "pilito-mh-app", "python3", "-", prefix, str(rate)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.process.stdin.write((Path(__file__).parent / "producer.py").read_text())
        self.process.stdin.close()
        self.process.stdin = None  # sent whole; communicate() only reads
        self.report = None

    def stop(self):
        if self.report is None:
            on("mh-app", "touch /tmp/stop-producer")
            out, err = self.process.communicate(timeout=300)
            self.report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err[-2000:]}
        return self.report


@pytest.fixture(scope="module")
def trace():
    return TaskTrace(BROKER + "/0", f"mh{int(time.time())}", ROOT / "build" / "multihost" / "trace",
                     [["docker", "exec", f"pilito-{host}", "docker"] for host in HOSTS])


@pytest.fixture(scope="module", autouse=True)
def producer(trace):
    running = Producer(trace.prefix, 3)
    yield running
    running.stop()
    trace.stop()


def test_the_collection_runs_from_its_installed_tarball_not_the_working_tree():
    installed = INSTALLED / "ansible_collections" / "pilito" / "priority_queue"
    assert (installed / "MANIFEST.json").is_file()
    assert not installed.is_symlink()
    assert not (installed / "molecule").exists() and not (installed / "tests").exists()


def test_each_host_runs_the_pools_its_groups_place_there():
    assert services_running("mh-app") == ["celery_beat", "celery_worker", "db", "redis", "web"]
    assert services_running("mh-ai") == ["celery_ai"]
    assert services_running("mh-workers") == ["celery_worker"]


def test_a_worker_host_has_the_app_worker_but_not_its_secrets_in_the_open():
    files = on("mh-ai", "stat -c '%a %n' /srv/pilito-demo/app/docker-compose.app-worker.yml; ls -a /srv/pilito-demo/app")
    assert files.stdout.startswith("600 "), files.stdout
    assert ".env" not in files.stdout.split() and ".git" not in files.stdout.split()
    assert "manage.py" in files.stdout.split()  # the code the worker mounts, copied from the app host


def test_the_deploy_carried_the_apps_image_to_the_worker_hosts():
    # create.yml loaded the demo's images into the app host's engine only.
    pools = {"mh-app": "celery_worker", "mh-ai": "celery_ai", "mh-workers": "celery_worker"}
    images = {host_name: inspect_service(host_name, service, "{{.Image}}")
              for host_name, service in pools.items()}
    assert all(images.values()) and len({image for found in images.values() for image in found}) == 1, images


def test_the_deploy_installed_the_modules_libraries_for_each_hosts_own_python():
    for host_name in HOSTS:
        assert installed_packages(host_name) == set(LIBRARY_PACKAGES), host_name
        out = on(host_name, "/usr/bin/python3 -c 'import redis, celery, requests, psycopg2'")
        assert out.returncode == 0, (host_name, out.stderr)


def test_verify_counts_each_pools_replicas_over_its_hosts():
    out = playbook("verify", "-v")
    assert out.returncode == 0, out.text[-3000:]
    for host_name in HOSTS:
        assert f"{host_name} : ok=" in out.text and "failed=0" in out.text


def test_a_host_lacking_a_library_is_refused_by_name_then_a_real_run_installs_it():
    on("mh-workers", "dpkg -r --force-depends python3-redis >/dev/null 2>&1")
    assert "python3-redis" not in installed_packages("mh-workers")
    out = playbook("verify", "-e", "priority_queue_hosts=mh-workers", "-e", "priority_queue_install_host_packages=false")
    assert out.returncode != 0
    assert "mh-workers: its Python (/usr/bin/python3) cannot import redis." in out.text, out.text[-2000:]
    assert "Install python3-redis (Debian packages), or set priority_queue_install_host_packages: true" in out.text
    out = playbook("verify", "--check", "-e", "priority_queue_hosts=mh-workers")
    assert out.returncode != 0
    assert "Check mode installs nothing; a real run installs python3-redis." in out.text, out.text[-2000:]
    assert "python3-redis" not in installed_packages("mh-workers")
    out = playbook("verify", "-e", "priority_queue_hosts=mh-workers")
    assert out.returncode == 0, out.text[-2000:]
    assert installed_packages("mh-workers") == set(LIBRARY_PACKAGES)


def inspect_service(host_name, service, template, stopped_too=False):
    """A `docker inspect --format` template over the containers of a service on a host, sorted."""
    listing = "docker ps -aq" if stopped_too else "docker ps -q"
    out = on(host_name, f"docker inspect --format '{template}' "
                        f"$({listing} --filter label=com.docker.compose.service={service})")
    assert out.returncode == 0, out.stderr
    return sorted(out.stdout.split())


def started_at(host_name, service):
    return inspect_service(host_name, service, "{{.State.StartedAt}}")


def consumers_by_host():
    """Host name of each worker container -> the queues its worker consumes, asked over the broker."""
    from celery import Celery  # pylint: disable=import-outside-toplevel

    app = Celery("test", broker=BROKER + "/0", set_as_current=False)
    try:
        with app.connection_for_write() as connection:
            replies = app.control.inspect(timeout=2, connection=connection).active_queues() or {}
    except Exception:  # noqa: BLE001 (the broker is unreachable for a moment)
        return {}
    finally:
        app.close()
    return {node.split("@", 1)[1]: sorted(queue["name"] for queue in queues) for node, queues in replies.items()}


def test_an_engine_restart_brings_the_hosts_pools_back_with_no_person():
    """mh-workers' Docker engine stopped (SIGTERM, as a package upgrade or a reboot stops it) while its
    general pool runs page tasks, and started again. The engine stops each container within its
    stop_grace_period, so the pool's running tasks finish (the last test finds none ran twice); the
    restart policy the deploy gave the pool starts it again."""
    host = "mh-workers"
    pools_before = consumers_by_host()
    assert pools_before, "no worker answered before the engine restart"
    started = time.monotonic()
    stop = on(host, "kill -TERM $(pidof dockerd) && while pidof dockerd >/dev/null; do sleep 0.2; done")
    assert stop.returncode == 0, stop.stderr
    stopped_after = time.monotonic() - started
    subprocess.run(["docker", "exec", "-d", f"pilito-{host}", "sh", "-c", "dockerd >>/var/log/dockerd.log 2>&1"],
                   check=True)
    deadline, back_after = time.monotonic() + 180, None
    while time.monotonic() < deadline:
        if len(consumers_by_host()) == len(pools_before):
            back_after = round(time.monotonic() - started, 1)
            break
        time.sleep(1)
    shutdown = on(host, "docker logs $(docker ps -aq --filter label=com.docker.compose.service=celery_worker) 2>&1"
                        " | grep -c 'Warm shutdown' || true")
    (ROOT / "build" / "multihost" / "engine_restart.json").write_text(json.dumps(dict(
        engine_stopped_seconds=round(stopped_after, 1), consumed_again_seconds=back_after,
        warm_shutdowns_logged=shutdown.stdout.strip())))
    assert back_after is not None and back_after <= 120, (back_after, consumers_by_host(), pools_before)
    assert inspect_service(host, "celery_worker", "{{.HostConfig.RestartPolicy.Name}}") == ["unless-stopped"]


def test_plan_c_restarts_the_celery_services_on_every_host():
    pools = [("mh-ai", "celery_ai"), ("mh-workers", "celery_worker"), ("mh-app", "celery_worker")]
    before = [started_at(host_name, service) for host_name, service in pools]
    out = playbook("rollback", "--tags", "plan_c")
    assert out.returncode == 0, out.text[-3000:]
    for (host_name, service), started in zip(pools, before):
        after = started_at(host_name, service)
        assert len(after) == len(started) and min(after) > max(started), (host_name, service, started, after)


def rollback_report(out, host_name):
    """The report a rollback printed for one host (the output's whitespace is collapsed)."""
    section = out.text.split("TASK [pilito.priority_queue.priority_queue : Report what the plan did and the state after]")[1]
    start = section.index(f"ok: [{host_name}] => ") + len(f"ok: [{host_name}] => ")
    return json.JSONDecoder().raw_decode(section[start:])[0]["msg"]


def test_plan_c_full_stops_the_worker_hosts_pools_before_the_broker_and_starts_them_after():
    out = playbook("rollback", "--tags", "plan_c_full")
    assert out.returncode == 0, out.text[-3000:]
    assert "pools stopped while the app host's stack went down and up" in out.text
    # The broker is shared: the app host's report names the workers of every host, not its own count.
    workers_consume = rollback_report(out, "mh-app")["workers_consume"]
    assert sorted(worker.split("@")[0] for worker in workers_consume) == ["celery_ai", "celery_worker", "celery_worker"]
    broker_started = inspect_service("mh-app", "redis", "{{.State.StartedAt}}", stopped_too=True)
    assert len(broker_started) == 1
    for host_name, service in (("mh-ai", "celery_ai"), ("mh-workers", "celery_worker")):
        stopped = inspect_service(host_name, service, "{{.State.FinishedAt}}", stopped_too=True)
        started = started_at(host_name, service)
        assert len(started) == 1 and max(stopped) < broker_started[0] < min(started), (host_name, stopped, started)
    assert containers_of("mh-app", "celery_worker") == 1


def containers_of(host_name, service):
    out = on(host_name, f"docker ps -q --filter label=com.docker.compose.service={service}")
    assert out.returncode == 0, out.stderr
    return len(out.stdout.split())


def test_plan_a_stops_the_ai_pool_where_it_runs_and_the_general_pool_serves_every_queue():
    out = playbook("rollback", "--tags", "plan_a")
    assert out.returncode == 0, out.text[-3000:]
    assert containers_of("mh-ai", "celery_ai") == 0
    assert containers_of("mh-app", "celery_worker") == containers_of("mh-workers", "celery_worker") == 1
    out = playbook("deploy")
    assert out.returncode == 0, out.text[-3000:]
    assert containers_of("mh-ai", "celery_ai") == 1


def test_a_deploy_that_fails_on_one_host_is_undone_on_every_host():
    image = on("mh-ai", "docker inspect --format '{{.Config.Image}}' "
                        "$(docker ps -q --filter label=com.docker.compose.service=celery_ai)").stdout.strip()
    assert image
    # Phase 2 starts a second AI container on mh-ai, whose name a stray container holds there.
    blocker = on("mh-ai", f"docker create --name pilito-demo-celery_ai-2 {image} true")
    assert blocker.returncode == 0, blocker.stderr
    override = "/srv/pilito-demo/app/docker-compose.priority-queue.yml"
    before = {host_name: on(host_name, f"cat {override}").stdout for host_name in HOSTS}
    try:
        out = playbook("deploy", "-e", "priority_queue_scale_phase=2")
        assert out.returncode != 0
        assert "already in use" in out.text, out.text[-3000:]  # mh-ai's own failure, with Compose's reason
        assert "so it was undone here as well" in out.text  # mh-workers, whose own part had gone through
        for host_name in HOSTS:
            assert on(host_name, f"cat {override}").stdout == before[host_name], host_name
        assert containers_of("mh-ai", "celery_ai") == 1
        assert containers_of("mh-app", "celery_worker") == containers_of("mh-workers", "celery_worker") == 1
    finally:
        on("mh-ai", "docker rm -f pilito-demo-celery_ai-2")


def test_scale_phase_2_adds_replicas_on_each_host_and_phase_1_takes_them_back():
    out = playbook("deploy", "-e", "priority_queue_scale_phase=2")
    assert out.returncode == 0, out.text[-3000:]
    assert containers_of("mh-ai", "celery_ai") == 2
    out = playbook("deploy")
    assert out.returncode == 0, out.text[-3000:]
    assert containers_of("mh-ai", "celery_ai") == 1
    assert containers_of("mh-app", "celery_worker") == containers_of("mh-workers", "celery_worker") == 1


def test_plan_b_removes_the_pools_from_the_hosts_that_ran_none_before():
    out = playbook("rollback", "--tags", "plan_b")
    assert out.returncode == 0, out.text[-3000:]
    assert services_running("mh-ai") == services_running("mh-workers") == []
    assert services_running("mh-app") == ["celery_beat", "celery_worker", "db", "redis", "web"]
    for host_name in ("mh-ai", "mh-workers"):
        assert on(host_name, "ls /srv/pilito-demo/app/docker-compose.app-worker.yml").returncode != 0, host_name


def task_runs(prefix):
    """Rows in the app's task_run table per task id (one row per finished run)."""
    psql = f"""{APP_COMPOSE} exec -T db sh -c 'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -tAF,'"""
    out = subprocess.run(
        ["docker", "exec", "-i", "pilito-mh-app", "sh", "-c", psql],
        input=f"SELECT task_id, count(*) FROM task_run WHERE task_id LIKE '{prefix}-%' GROUP BY task_id;\n",
        capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return {task_id: int(count) for task_id, count in (line.split(",") for line in out.stdout.split())}


def ai_waits():
    """Task id -> (sent_at, seconds until a worker started it) of each AI reply the producer asked
    for, from the results the demo's task stores (its result backend is the broker's database 1)."""
    client = redis.Redis.from_url(BROKER + "/1", socket_timeout=10)
    waits = {}
    try:
        for key in client.scan_iter("celery-task-meta-*", count=1000):
            stored = json.loads(client.get(key) or "{}")
            result = stored.get("result")
            if isinstance(result, dict) and str(result.get("answer", "")).startswith("AI reply to: multihost"):
                waits[stored.get("task_id")] = (result["sent_at"], result["started_at"] - result["sent_at"])
    except redis.RedisError:  # the broker is down (a plan that failed midway): read again after the next step
        pass
    return waits


def test_every_task_ran_exactly_once_and_ai_replies_waited_little_after_each_step(
        producer, trace, where_in_the_broker):
    report = producer.stop()
    assert report.get("sent") and not report.get("unsent"), report
    deadline = time.monotonic() + 300
    while True:
        counts = task_runs(producer.prefix)
        missing = [task_id for task_id in report["sent"] if counts.get(task_id, 0) == 0]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(5)
    twice = {task_id: count for task_id, count in counts.items() if count > 1}
    AI_WAITS.update(ai_waits())
    waits = list(AI_WAITS.values())
    # After each deploy and rollback but the last (plan B returns to one queue, the runbook's
    # "before"): the AI replies sent in the SETTLE_SECONDS after it ended.
    after = {label: [wait for sent, wait in waits if end <= sent <= end + SETTLE_SECONDS]
             for label, _start, end, settled in STEPS[:-1] if settled}
    during = {label: max([wait for sent, wait in waits if start <= sent <= end], default=None)
              for label, start, end, _settled in STEPS}
    (ROOT / "build" / "multihost" / "load.json").write_text(json.dumps(dict(
        sent=len(report["sent"]), ran_once=sum(1 for task_id in report["sent"] if counts.get(task_id) == 1),
        retried=len(report["retried"]), ai_replies=len(waits),
        worst_ai_wait_after_step={step: max(values, default=None) for step, values in after.items()},
        worst_ai_wait_during_step=during), indent=1))
    assert not missing, (f"{len(missing)} of {len(report['sent'])} tasks never ran: {missing[:10]}",
                         trace.explain(missing[:3]), where_in_the_broker(BROKER + "/0", missing[:10]))
    assert not twice, f"ran more than once: {twice} (sends retried: {report['retried']})"
    slow = {step: max(values) for step, values in after.items() if max(values, default=0) > LATENCY_THRESHOLD_SECONDS}
    assert not slow, f"AI replies waited longer than {LATENCY_THRESHOLD_SECONDS} s after these steps: {slow}"
    assert all(len(values) >= 3 for values in after.values()), {step: len(values) for step, values in after.items()}
