"""What happens to the deployed plain app at 3 a.m., with no person acting: while a producer sends
every kind of task and a backlog waits, the general pool's and the AI pool's main process are
killed (SIGKILL, as the OOM killer or a crash does it), then the broker's, then the controller in
the middle of a deploy that changes the topology (after it drained the workers it replaces), and a
deploy meets a full backup disk. The restart policies the deploy gave the app, the workers' watch
for dead workers and for drained workers left behind bring it back. Every task is counted: sent,
run once, run twice (a task running when its worker died runs again: a redelivery), lost. The
matrix goes to build/fault_matrix.json (`make bench` prints it)."""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg2
import pytest
import redis
from celery import Celery
from test_plain import (  # the plain scenario's helpers
    APP_DIR,
    INVENTORY,
    PLAIN_DIR,
    POOL_QUEUES,
    ROOT,
    Producer,
    broker_url,
    consumers,
    dotenv,
    failures,
    playbook,
)

# The targets of issue 25.
BACK_WITHIN = 60  # every queue consumed again, and a dead worker's tasks back on their queue
DRAINED_FOR = 45  # DRAINED_FOR_SECONDS of the rendered config
RESHAPED = json.dumps({"priority_queue_pools": [
    {"name": "responders", "queues": ["answers"], "concurrency": 2, "memory": "256m"},
    {"name": "jobs", "queues": ["answers", "work", "bulk"], "concurrency": 2, "memory": "384m"}]})


class TimedProducer(Producer):
    """The plain scenario's producer, noting when it sent each task."""

    def __init__(self, prefix, **kwargs):
        super().__init__(prefix, **kwargs)
        self.sent_at = {}

    def send(self, task_id, name, args):
        self.sent_at[task_id] = time.time()
        return super().send(task_id, name, args)


class OutsideProducer(threading.Thread):
    """A producer outside the stack (a second web host, a cron job): Celery on the controller sending
    straight to the broker's published port, each send retried with its task id until it is taken."""

    def __init__(self, producer, rate=4.0, seconds=120):
        super().__init__(daemon=True)
        self.producer, self.rate, self.deadline = producer, rate, time.monotonic() + seconds
        self.stopped = threading.Event()
        self.sent = []

    def run(self):
        app = Celery("outside", broker=broker_url(), set_as_current=False)
        app.conf.broker_connection_retry = False
        number = 0
        while not self.stopped.is_set() and time.monotonic() < self.deadline:
            task_id = f"{self.producer.prefix}-outside-{number}"
            while time.monotonic() < self.deadline:
                try:
                    with app.connection_for_write() as connection:
                        app.send_task("jobs.tasks.tidy", task_id=task_id, queue="work", connection=connection,
                                      retry=False)
                    break
                except Exception:  # noqa: BLE001 (the broker is down: send it again)
                    time.sleep(0.3)
            else:
                break
            self.producer.sent_at[task_id] = time.time()
            self.producer.sent.append(task_id)
            self.sent.append(task_id)
            number += 1
            time.sleep(1 / self.rate)


def runs_with_times(prefix):
    connection = psycopg2.connect(host="127.0.0.1", port=5442, dbname="jobs", user="jobs",
                                  password=dotenv()["STORE_PASSWORD"])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT task_id, task_name, extract(epoch FROM ran_at) FROM job_run "
                           "WHERE task_id LIKE %s", (prefix + "-%",))
            return cursor.fetchall()
    finally:
        connection.close()


def container_of(service):
    out = subprocess.run(["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=pilito-plain",
                          "--filter", f"label=com.docker.compose.service={service}"],
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0]


def inspect(container, template):
    return subprocess.run(["docker", "inspect", "-f", template, container], capture_output=True, text=True,
                          check=True).stdout.strip()


def every_pool_consumes():
    """Each pool answers with its queues (asked over the broker; False while it is away)."""
    try:
        found = consumers()
    except Exception:  # noqa: BLE001 (the broker is restarting)
        return False
    pools = {node.split("@")[0]: queues for node, queues in found.items()}
    return all(pools.get(pool) == sorted(queues) for pool, queues in POOL_QUEUES.items())


def redelivered(client):
    return sum(int(count) for count in client.hvals("priority_queue.redelivered"))


def held_by(client, hostname):
    """The delivery tags the workers of this container hold (the rendered config's owner notes)."""
    owners = client.hgetall("priority_queue.unacked_owner")
    return {tag for tag, token in owners.items() if token.decode().startswith(hostname + ":")}


def wait_since(since, condition, seconds):
    """Seconds from `since` (time.monotonic()) until condition() held, polled every 0.5 s; None if
    it did not within seconds."""
    while time.monotonic() - since < seconds:
        if condition():
            return round(time.monotonic() - since, 1)
        time.sleep(0.5)
    return None


def burst(producer, name, count):
    """Tasks sent at once beside the steady load, so that tasks run and wait when the fault hits."""
    for number in range(count):
        task_id = f"{producer.prefix}-burst{int(time.time() * 1000)}-{number}"
        args = [f"burst {number}"] if name == "jobs.tasks.answer" else [number]
        (producer.sent if producer.send(task_id, name, args) else producer.unsent).append(task_id)


def sigkill_main_process(service):
    """SIGKILL the container's main process from the host, as the OOM killer does (not `docker
    kill`, which Docker counts as a stop its restart policy respects)."""
    container = container_of(service)
    hostname = inspect(container, "{{.Config.Hostname}}")
    os.kill(int(inspect(container, "{{.State.Pid}}")), signal.SIGKILL)
    return container, hostname


def crash(client, producer, service, burst_task):
    burst(producer, burst_task, 30)
    time.sleep(1.0)
    before = redelivered(client)
    start, killed = time.time(), time.monotonic()
    container, hostname = sigkill_main_process(service)
    # Read after the kill: a task of 0.2 s read before it may be done and acked by then. Nothing
    # acks after it, and the worker that Docker starts again notes its own under a new token.
    held = held_by(client, hostname)
    back = wait_since(killed, every_pool_consumes, BACK_WITHIN + 60)
    requeued = wait_since(killed, lambda: not held & set(client.hkeys("unacked")), BACK_WITHIN + 60) if held else None
    return dict(fault=f"{service} main process SIGKILL", at=start, held=len(held),
                back_seconds=back, requeued_seconds=requeued, redelivered=redelivered(client) - before,
                restarts=int(inspect(container, "{{.RestartCount}}")),
                policy=inspect(container, "{{.HostConfig.RestartPolicy.Name}}"))


def kill_controller_after_drain(extra):
    """Run deploy.yml and SIGKILL it (its whole process group) once it drained the workers it
    replaces; returns the seconds it ran."""
    cmd = ["ansible-playbook", "-i", INVENTORY, str(ROOT / "playbooks/deploy.yml"), "-e", extra]
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_FORCE_COLOR": "0"}
    start = time.monotonic()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          start_new_session=True) as run:
        drain_task = False
        for line in run.stdout:
            if "Stop those workers taking messages" in line:
                drain_task = True
            elif drain_task and line.startswith("changed:"):
                os.killpg(run.pid, signal.SIGKILL)
                break
            if time.monotonic() - start > 600:
                os.killpg(run.pid, signal.SIGKILL)
                pytest.fail("the deploy did not reach the drain in 600 s")
        run.wait(timeout=30)
    return round(time.monotonic() - start, 1)


@pytest.fixture(scope="module")
def faults():
    prefix = f"fault{int(time.time())}"
    client = redis.Redis.from_url(broker_url())
    producer = TimedProducer(prefix, rate=4.0, limit=4000, seconds=1500)
    producer.start()
    matrix, seen = [], {}
    time.sleep(3)

    matrix.append(crash(client, producer, "jobs", "jobs.tasks.index"))
    matrix.append(crash(client, producer, "responders", "jobs.tasks.answer"))

    burst(producer, "jobs.tasks.index", 30)
    time.sleep(1.0)
    before, start, killed = redelivered(client), time.time(), time.monotonic()
    container, _hostname = sigkill_main_process("queue")
    back = wait_since(killed, every_pool_consumes, BACK_WITHIN + 60)
    matrix.append(dict(fault="broker main process SIGKILL", at=start, back_seconds=back, requeued_seconds=None,
                       redelivered=redelivered(client) - before, restarts=int(inspect(container, "{{.RestartCount}}")),
                       policy=inspect(container, "{{.HostConfig.RestartPolicy.Name}}")))
    client = redis.Redis.from_url(broker_url())

    # The controller dies between the drain and the stop of the workers it replaces.
    before, start = redelivered(client), time.time()
    ran = kill_controller_after_drain(RESHAPED)
    killed = time.monotonic()
    seen["consumers_after_kill"] = consumers()
    back = wait_since(killed, every_pool_consumes, DRAINED_FOR + 60)
    matrix.append(dict(fault="controller SIGKILL after the drain of a deploy that reshapes a pool", at=start,
                       back_seconds=back, requeued_seconds=None, redelivered=redelivered(client) - before,
                       deploy_ran_seconds=ran))
    seen["rerun"] = playbook("deploy", "-e", RESHAPED)

    # Down and not restarted by Docker (`docker stop`, as the services of a host whose engine came back
    # without their restart policies): deploy.yml starts them before it checks anything.
    start = time.time()
    subprocess.run(["docker", "stop", container_of("responders"), container_of("queue")], check=True,
                   capture_output=True)
    seen["deploy_after_down"] = playbook("deploy", "-e", RESHAPED)
    matrix.append(dict(fault="the broker and the AI pool stopped, then deploy.yml", at=start,
                       back_seconds=seen["deploy_after_down"]["seconds"], requeued_seconds=None, redelivered=0))
    client = redis.Redis.from_url(broker_url())

    # plan_c_full while a producer outside the stack keeps sending: the saved messages come back
    # beside the ones it sent meanwhile, each once.
    outside = OutsideProducer(producer)
    outside.start()
    time.sleep(3)
    start = time.time()
    seen["plan_c_full"] = playbook("rollback", tags="plan_c_full")
    time.sleep(3)
    outside.stopped.set()
    outside.join(timeout=60)
    client = redis.Redis.from_url(broker_url())
    matrix.append(dict(fault="plan_c_full while a producer outside the stack sends", at=start,
                       back_seconds=seen["plan_c_full"]["seconds"], requeued_seconds=None, redelivered=0,
                       outside_sent=len(outside.sent)))

    # A full backup disk: a 16 MB tmpfs with 2 MB left, and a deploy that has a change to make.
    full = Path(PLAIN_DIR) / "full_backups"
    full.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(full)], check=True)
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={full}/filler", "bs=1M", "count=14"], check=True,
                       capture_output=True)
        override = Path(f"{APP_DIR}/docker-compose.priority-queue.yml").read_text()
        running = sorted(subprocess.run(["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=pilito-plain"],
                                        capture_output=True, text=True, check=True).stdout.split())
        start = time.time()
        seen["full_disk"] = playbook("deploy", "-e", f"priority_queue_backup_dir={full}/backups",
                                     "-e", "priority_queue_min_free_disk_mb=1")
        seen["full_disk_unchanged"] = (
            Path(f"{APP_DIR}/docker-compose.priority-queue.yml").read_text() == override,
            sorted(subprocess.run(["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=pilito-plain"],
                                  capture_output=True, text=True, check=True).stdout.split()) == running,
            sorted(path.name for path in full.iterdir()))
        matrix.append(dict(fault="backup disk full", at=start, refused=seen["full_disk"]["rc"] != 0,
                           back_seconds=0, requeued_seconds=None, redelivered=0))
    finally:
        subprocess.run(["umount", str(full)], check=False)
        full.rmdir()

    producer.stopped.set()
    producer.join(timeout=60)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len({row[0] for row in runs_with_times(prefix)}) < len(producer.sent):
        time.sleep(2)
    rows = runs_with_times(prefix)
    runs, first_run = {}, {}
    for task_id, name, ran_at in rows:
        runs[task_id] = runs.get(task_id, 0) + 1
        first_run[task_id] = min(first_run.get(task_id, float(ran_at)), float(ran_at))
        seen.setdefault("names", {})[task_id] = name
    # Each fault's tasks: those sent from 2 s before it to 2 s before the next one.
    for row, after in zip(matrix, [row["at"] for row in matrix[1:]] + [float("inf")]):
        window = [task for task in producer.sent if row["at"] - 2 <= producer.sent_at[task] < after - 2]
        row["sent"] = len(window)
        row["ran_once"] = sum(1 for task in window if runs.get(task) == 1)
        row["ran_twice"] = sum(1 for task in window if runs.get(task, 0) > 1)
        row["lost"] = sum(1 for task in window if task not in runs)
        waits = [first_run[task] - producer.sent_at[task] for task in window
                 if task in first_run and seen["names"].get(task) == "jobs.tasks.answer"]
        row["worst_ai_wait_seconds"] = round(max(waits), 2) if waits else None
        row.pop("at")
    totals = dict(sent=len(producer.sent), ran_once=sum(1 for task in producer.sent if runs.get(task) == 1),
                  ran_twice=sum(1 for task in producer.sent if runs.get(task, 0) > 1),
                  lost=sum(1 for task in producer.sent if task not in runs), unsent=len(producer.unsent),
                  redelivered=sum(row["redelivered"] for row in matrix))
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build/fault_matrix.json").write_text(json.dumps(dict(faults=matrix, totals=totals), indent=1))
    return dict(matrix={row["fault"]: row for row in matrix}, totals=totals, seen=seen, runs=runs,
                producer=producer)


def test_a_killed_pool_comes_back_and_its_tasks_run_again_within_a_minute(faults):
    for service in ("jobs", "responders"):
        row = faults["matrix"][f"{service} main process SIGKILL"]
        assert row["policy"] == "unless-stopped" and row["restarts"] >= 1, row
        assert row["back_seconds"] is not None and row["back_seconds"] <= BACK_WITHIN, row
        if row["held"]:
            assert row["requeued_seconds"] is not None and row["requeued_seconds"] <= BACK_WITHIN, row
            assert row["redelivered"] >= 1, row
    assert faults["matrix"]["jobs main process SIGKILL"]["held"] >= 1  # the burst had it running tasks


def test_the_broker_killed_comes_back_and_every_pool_consumes_again(faults):
    row = faults["matrix"]["broker main process SIGKILL"]
    assert row["policy"] == "unless-stopped", row  # the app declared none: the deploy gave it in place
    assert row["back_seconds"] is not None and row["back_seconds"] <= BACK_WITHIN, row


def test_workers_drained_by_a_deploy_that_died_consume_again(faults):
    row = faults["matrix"]["controller SIGKILL after the drain of a deploy that reshapes a pool"]
    drained = faults["seen"]["consumers_after_kill"]
    assert any(queues == [] for queues in drained.values()), drained  # killed after the drain indeed
    assert row["back_seconds"] is not None and row["back_seconds"] <= BACK_WITHIN, row
    rerun = faults["seen"]["rerun"]
    assert rerun["rc"] == 0, failures(rerun["out"])


def test_the_deploy_starts_what_is_down_before_it_checks_anything(faults):
    step = faults["seen"]["deploy_after_down"]
    assert step["rc"] == 0, failures(step["out"])
    assert "started responders, queue: they were down" in step["out"]


def test_plan_c_full_puts_the_saved_messages_back_beside_those_sent_meanwhile(faults):
    step = faults["seen"]["plan_c_full"]
    assert step["rc"] == 0, failures(step["out"])
    assert "sent meanwhile kept beside them" in step["out"] and "could NOT" not in step["out"]
    row = faults["matrix"]["plan_c_full while a producer outside the stack sends"]
    assert row["outside_sent"] > 10 and row["lost"] == 0 and row["ran_twice"] == 0, row


def test_a_full_backup_disk_is_refused_before_any_change_with_the_numbers(faults):
    step = faults["seen"]["full_disk"]
    assert step["rc"] != 0
    assert f"MB free for priority_queue_backup_dir {PLAIN_DIR}/full_backups/backups; the backup needs" in step["out"]
    assert "Nothing was changed" in step["out"]
    override_same, containers_same, files = faults["seen"]["full_disk_unchanged"]
    assert override_same and containers_same and files == ["filler"]


def test_no_task_is_lost_and_every_second_run_is_a_redelivery(faults):
    totals = faults["totals"]
    assert totals["unsent"] == 0 and totals["lost"] == 0, totals
    assert totals["sent"] > 300, totals
    # A task runs twice only when its worker died running it, and each such run is counted.
    assert totals["ran_twice"] <= totals["redelivered"], (totals, faults["matrix"])
