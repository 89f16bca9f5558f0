"""The plain app after deploy.yml, and then a whole sequence under a producer's steady load:
verify.yml, plan A, plan C, plan C in full, a redeploy that fails and undoes itself, a release that moves the app's image tag, plan B bringing
back the image it replaced, a first deploy that fails and undoes itself, a last deploy. Every task
the producer sent is then counted in the app's own database: each ran exactly once."""

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg2
import pytest
import redis
from celery import Celery
from conftest import TaskTrace

ROOT = Path(__file__).resolve().parents[3]
PLAIN_DIR = os.environ.get("PLAIN_DIR", "/srv/pilito-plain")
APP_DIR = f"{PLAIN_DIR}/app"
INVENTORY = str(ROOT / "molecule/plain/inventory")
TASKS = [("jobs.tasks.answer", lambda n: [f"question {n}"]), ("jobs.tasks.index", lambda n: [n]),
         ("jobs.tasks.tidy", lambda n: [])]
BAD_WORKER = json.dumps({"priority_queue_worker_command": ["python3", "-m", "celery", "-A", "nosuchapp", "worker"]})
POOL_QUEUES = {"responders": ["answers"], "jobs": ["answers", "work", "bulk"]}


def dotenv():
    lines = Path(f"{APP_DIR}/.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def broker_url():
    return f"redis://:{dotenv()['QUEUE_PASSWORD']}@127.0.0.1:6390/0"


def job_runs(prefix):
    connection = psycopg2.connect(host="127.0.0.1", port=5442, dbname="jobs", user="jobs",
                                  password=dotenv()["STORE_PASSWORD"])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT task_id, count(*) FROM job_run WHERE task_id LIKE %s GROUP BY task_id", (prefix + "-%",))
            return dict(cursor.fetchall())
    finally:
        connection.close()


def consumers():
    """Worker node -> the queues it consumes, asked over the broker."""
    app = Celery("test", broker=broker_url(), set_as_current=False)
    # A connection of its own: kombu's shared pool may hold one the broker closed when it restarted.
    with app.connection_for_write() as connection:
        replies = app.control.inspect(timeout=3, connection=connection).active_queues() or {}
    return {node: sorted(queue["name"] for queue in queues) for node, queues in replies.items()}


def running_image(service):
    out = subprocess.run(["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=pilito-plain",
                          "--filter", f"label=com.docker.compose.service={service}"], capture_output=True, text=True,
                         check=True).stdout.split()
    return [subprocess.run(["docker", "inspect", "--format", "{{.Image}}", container], capture_output=True,
                           text=True, check=True).stdout.strip() for container in out]


def running_services():
    out = subprocess.run(["docker", "ps", "--filter", "label=com.docker.compose.project=pilito-plain", "--format",
                          '{{.Label "com.docker.compose.service"}}'], capture_output=True, text=True, check=True)
    return sorted(set(out.stdout.split()))


def playbook(name, *extra, tags=None):
    cmd = ["ansible-playbook", "-i", INVENTORY, str(ROOT / "playbooks" / f"{name}.yml"), *extra]
    if tags:
        cmd += ["--tags", tags]
    # The JSON callback: messages whole, whatever callback or line width molecule sets.
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900, env=env)
    return dict(rc=proc.returncode, out=proc.stdout, seconds=round(time.monotonic() - start, 1),
                warnings=warnings(proc.stdout))


def task_results(out):
    """(task name, host result) for each result in a playbook's JSON output; None if it is not JSON."""
    try:
        plays = json.loads(out[out.index("{"):])["plays"]
    except (ValueError, KeyError):
        return None
    return [(task["task"]["name"], result) for play in plays for task in play["tasks"]
            for result in task["hosts"].values()]


def failures(out):
    """The messages of the tasks that failed (rescued ones too)."""
    results = task_results(out)
    if results is None:
        return [out[-3000:]]
    return [f"{name}: {result.get('msg')}" for name, result in results if result.get("failed")]


def warnings(out):
    """The tasks' warnings (a worker not drained, say)."""
    return [f"{name}: {warning}" for name, result in task_results(out) or []
            for warning in result.get("warnings") or []]


class Producer(threading.Thread):
    """Sends tasks through the app's API at a steady rate until stopped (bounded in count and time).
    A send that gets no answer (the API is being recreated) is retried with the same task id."""

    def __init__(self, prefix, rate=4.0, limit=3000, seconds=1500):
        super().__init__(daemon=True)
        self.prefix, self.rate, self.limit = prefix, rate, limit
        self.deadline = time.monotonic() + seconds
        self.stopped = threading.Event()
        self.sent, self.unsent = [], []
        self.retried = {}  # task id -> (attempts, seconds from the first attempt to the answer)

    def send(self, task_id, name, args):
        body = json.dumps({"name": name, "args": args, "task_id": task_id}).encode()
        request = urllib.request.Request("http://127.0.0.1:8100/send", body, {"Content-Type": "application/json"})
        first, attempts = time.monotonic(), 0
        while time.monotonic() < self.deadline:
            attempts += 1
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    json.load(response)
                    if attempts > 1:
                        self.retried[task_id] = (attempts, round(time.monotonic() - first, 1))
                    return True
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise
            except OSError:
                pass
            time.sleep(0.3)
        return False

    def run(self):
        start = time.monotonic()
        for number in range(self.limit):
            if self.stopped.is_set():
                break
            name, args = TASKS[number % len(TASKS)]
            task_id = f"{self.prefix}-{number}"
            (self.sent if self.send(task_id, name, args(number)) else self.unsent).append(task_id)
            time.sleep(max(0.0, start + (number + 1) / self.rate - time.monotonic()))


class TaskEvents(threading.Thread):
    """What the workers said of each task (their task events, -E), to tell a task no worker received
    from one that failed or ran without its row. Reconnects when the broker restarts."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stopped = threading.Event()
        self.seen = {}

    def on_event(self, event):
        if event.get("type", "").startswith("task-"):
            self.seen.setdefault(event.get("uuid"), []).append(
                (round(event.get("timestamp", 0), 2), event["type"], event.get("hostname"), event.get("exception")))

    def run(self):
        app = Celery("events", broker=broker_url(), set_as_current=False)
        while not self.stopped.is_set():
            try:
                with app.connection_for_read() as connection:
                    receiver = app.events.Receiver(connection, handlers={"*": self.on_event})
                    receiver.capture(limit=None, timeout=2, wakeup=False)
            except Exception:  # noqa: BLE001 (the broker restarts, or is quiet for 2 s)
                time.sleep(0.3)


@pytest.fixture(scope="module")
def sequence():
    prefix = f"plain{int(time.time())}"
    record = json.loads(Path(f"{APP_DIR}/priority_queue/state/pre_deploy.json").read_text())
    events = TaskEvents()
    events.start()
    trace = TaskTrace(broker_url(), prefix, ROOT / "build" / "plain_trace", [["docker"]])
    producer = Producer(prefix)
    producer.start()
    steps, seen = {}, {}

    def step(key, name, *extra, tags=None):
        """Runs a playbook; notes which of the producer's tasks were sent while it ran."""
        first = len(producer.sent)
        steps[key] = playbook(name, *extra, tags=tags)
        steps[key]["sent_during"] = [first, len(producer.sent)]

    step("verify", "verify")
    step("plan_a", "rollback", tags="plan_a")
    seen["after_plan_a"] = consumers()
    step("deploy_after_a", "deploy")
    step("plan_c", "rollback", tags="plan_c")
    step("plan_c_full", "rollback", tags="plan_c_full")
    step("plan_c_full_wrong_broker", "rollback", "-e", "priority_queue_broker_service=nosuch", tags="plan_c_full")
    # A failure after the stack went down: waiting for a web service that is not there.
    step("plan_c_full_failing_late", "rollback", "-e", "priority_queue_web_service=nosuch", tags="plan_c_full")
    seen["snapshot_after_late_failure"] = Path(f"{APP_DIR}/priority_queue/state/broker_snapshot.json").exists()
    seen["services_after_late_failure"] = running_services()
    rendered = Path(f"{APP_DIR}/docker-compose.priority-queue.yml").read_text()
    step("bad_redeploy", "deploy", "-e", BAD_WORKER)
    seen["after_bad_redeploy"] = consumers()
    seen["rendered_after_bad_redeploy"] = Path(f"{APP_DIR}/docker-compose.priority-queue.yml").read_text() == rendered
    subprocess.run([str(ROOT / "scripts/plain_app.sh"), "release", "2"], check=True, capture_output=True)
    step("release_deploy", "deploy")
    seen["image_after_release"] = running_image("jobs")
    step("plan_b", "rollback", tags="plan_b")
    seen["image_after_plan_b"] = running_image("jobs") + running_image("api")
    seen["after_plan_b"] = consumers()
    step("bad_first_deploy", "deploy", "-e", BAD_WORKER)
    seen["after_bad_first_deploy"] = consumers()
    seen["override_after_bad_first_deploy"] = Path(f"{APP_DIR}/docker-compose.priority-queue.yml").exists()
    step("last_deploy", "deploy")
    producer.stopped.set()
    producer.join(timeout=60)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(job_runs(prefix)) < len(producer.sent):
        time.sleep(2)
    runs = job_runs(prefix)
    events.stopped.set()
    trace.stop()
    # The timings, for the record (build/ is not committed).
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build/plain_sequence.json").write_text(json.dumps(dict(
        steps={name: dict(rc=item["rc"], seconds=item["seconds"], sent_during=item["sent_during"],
                          warnings=item["warnings"])
               for name, item in steps.items()},
        sent=len(producer.sent), ran_once=sum(1 for task in producer.sent if runs.get(task) == 1)), indent=1))
    return dict(steps=steps, seen=seen, record=record, producer=producer, runs=runs, events=events.seen, trace=trace)


def test_the_deploy_ran_the_apps_own_worker_command_with_its_options(host):
    rendered = host.file(f"{APP_DIR}/docker-compose.priority-queue.yml").content_string
    assert '["python3", "-m", "celery", "-A", "jobs.worker", "worker", "-E"' in rendered
    assert '"/opt/priority_queue:/srv/code"' in rendered  # the image's own PYTHONPATH kept


def test_no_checkout_the_record_names_the_images_instead(host):
    record = json.loads(host.file(f"{APP_DIR}/priority_queue/state/pre_deploy.json").content_string)
    assert record["app_revision"] == ""
    assert set(record["images"]) == {"api", "jobs", "queue", "store"}
    assert record["queues_consumed_before"] == ["jobs"]


def test_the_backup_was_taken_over_tcp_with_the_password(host):
    dumps = host.check_output(f"ls {PLAIN_DIR}/backups/*.dump").split()
    assert len(dumps) == 1 and host.file(dumps[0]).size > 0


def test_each_step_of_the_sequence(sequence):
    steps = sequence["steps"]
    for name in ("verify", "plan_a", "deploy_after_a", "plan_c", "plan_c_full",
                 "release_deploy", "plan_b", "last_deploy"):
        assert steps[name]["rc"] == 0, (name, failures(steps[name]["out"]))


def test_plan_a_leaves_the_general_pool_on_every_queue(sequence):
    after = sequence["seen"]["after_plan_a"]
    assert [queues for node, queues in after.items() if node.startswith("jobs@")] == [["answers", "bulk", "work"]]
    assert not [node for node in after if node.startswith("responders@")]


def test_plan_c_full_refuses_a_broker_service_that_is_not_declared(sequence):
    step = sequence["steps"]["plan_c_full_wrong_broker"]
    assert step["rc"] != 0
    assert "priority_queue_broker_service nosuch is not a service of the compose files" in step["out"]


def test_plan_c_full_failing_after_the_stack_went_down_brings_it_back_with_its_messages(sequence):
    step = sequence["steps"]["plan_c_full_failing_late"]
    assert step["rc"] != 0
    assert "The stack was started again." in step["out"] and "saved and put back." in step["out"]
    assert sequence["seen"]["snapshot_after_late_failure"] is False
    assert sequence["seen"]["services_after_late_failure"] == ["api", "jobs", "queue", "responders", "store"]


def test_a_failed_redeploy_puts_the_deploy_before_it_back(sequence):
    step = sequence["steps"]["bad_redeploy"]
    assert step["rc"] != 0
    assert "The module nosuchapp was not found" in step["out"]
    assert "Put back: files of the deploy before this one put back" in step["out"]
    assert sequence["seen"]["rendered_after_bad_redeploy"]
    pools = {node.split("@")[0]: queues for node, queues in sequence["seen"]["after_bad_redeploy"].items()}
    assert pools == {pool: sorted(queues) for pool, queues in POOL_QUEUES.items()}


def test_plan_b_brings_back_the_image_a_later_release_replaced(sequence):
    recorded = sequence["record"]["images"]["jobs"]["id"]
    assert sequence["seen"]["image_after_release"] != [recorded]
    assert sequence["seen"]["image_after_plan_b"] == [recorded, sequence["record"]["images"]["api"]["id"]]
    after = sequence["seen"]["after_plan_b"]
    assert list(after.values()) == [["jobs"]], after


def test_a_failed_first_deploy_returns_to_the_app_as_it_was(sequence):
    step = sequence["steps"]["bad_first_deploy"]
    assert step["rc"] != 0 and "The module nosuchapp was not found" in step["out"]
    assert list(sequence["seen"]["after_bad_first_deploy"].values()) == [["jobs"]]
    assert sequence["seen"]["override_after_bad_first_deploy"] is False


def test_every_task_ran_exactly_once(sequence, where_in_the_broker):
    producer, runs = sequence["producer"], sequence["runs"]
    assert producer.unsent == []
    assert len(producer.sent) > 200
    missing = [task for task in producer.sent if task not in runs]
    twice = {task: count for task, count in runs.items() if count > 1}
    told = {task: (sequence["events"].get(task), producer.retried.get(task))
            for task in missing[:10] + list(twice)[:10]}
    warned = {name: step["warnings"] for name, step in sequence["steps"].items() if step["warnings"]}
    sent_during = {name: step["sent_during"] for name, step in sequence["steps"].items()}
    assert not missing and not twice, (len(missing), len(twice), sequence["trace"].explain(missing[:3]), told,
                                       warned, where_in_the_broker(broker_url(), missing[:10]), sent_during)


def test_nothing_waits_on_a_queue_without_a_consumer(sequence):
    client = redis.Redis.from_url(broker_url())
    assert client.llen("jobs") == 0
