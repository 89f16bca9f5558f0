"""Wall time of each rollback plan on the demo host, while a producer keeps sending tasks, and the
proof that every task it sent ran exactly once.

    python benchmarks/rollback_bench.py [--tasks 600] [--rate 10] [--report FILE]

Needs the demo stack up in its before state (`scripts/demo.sh up`). The producer posts to the app's
/api/tasks/ (so the app's own routing applies) across the three queues: chat replies
(high_priority), page jobs (low_priority) and the knowledge count (default). Sequence: deploy,
plan_a twice, deploy, a page backlog, plan_b twice, deploy, plan_c, plan_c_full. Then it waits
until the task_run table has every task, bounded in time, and writes a JSON report. The runbook's
budgets: plan_a 2 min (target 10 s), plan_b 5 min (45 s), plan_c 30 s (30 s, the full down/up too).
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
TASKS = [
    ("chat.tasks.generate_ai_reply", lambda n: [f"rollback proof {n}", time.time()]),
    ("crawler.tasks.process_page_content", lambda n: [n]),
    ("knowledge.tasks.count_missing_chunk_index", lambda n: []),
]
TARGETS = {"plan_a": 10, "plan_b": 45, "plan_c": 30, "plan_c_full": 30}


def read_env(app_dir):
    lines = (Path(app_dir) / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


class Producer(threading.Thread):
    """Sends `count` tasks at `rate` per second. A send that got no answer (the web server was being
    recreated; Docker's port proxy then drops the connection) is retried with the same task id. Had
    the app sent the task before failing to answer, the task would run twice and the count shows it;
    such ids are listed in `retried` so a duplicate can be traced to them."""

    def __init__(self, port, count, rate, prefix, deadline_seconds):
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/api/tasks/"
        self.count, self.rate, self.prefix = count, rate, prefix
        self.deadline = time.monotonic() + deadline_seconds
        self.sent, self.unsent, self.retried, self.queues = [], [], set(), {}
        self.stopped = threading.Event()  # set: no more sends

    def send(self, task_id, name, args):
        body = json.dumps({"name": name, "args": args, "task_id": task_id}).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        while time.monotonic() < self.deadline:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    queue = json.load(response)["queue"]
                    self.queues[queue] = self.queues.get(queue, 0) + 1
                    return True
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise
                self.retried.add(task_id)  # the app answered that it could not send it (broker down)
            except (OSError, http.client.HTTPException):
                self.retried.add(task_id)
            time.sleep(0.2)
        self.unsent.append(task_id)
        return False

    def run(self):
        start = time.monotonic()
        for n in range(self.count):
            if self.stopped.is_set():
                break
            name, make_args = TASKS[n % len(TASKS)]
            task_id = f"{self.prefix}-{n}"
            if self.send(task_id, name, make_args(n)):
                self.sent.append(task_id)
            time.sleep(max(0.0, start + (n + 1) / self.rate - time.monotonic()))


def playbook(name, inventory, tags=None, extra=()):
    """Runs a playbook with the JSON callback; returns seconds, stats and the task results."""
    cmd = ["ansible-playbook", "-i", inventory, str(ROOT / "playbooks" / f"{name}.yml"), *extra]
    if tags:
        cmd += ["--tags", tags]
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.monotonic() - start
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        raise SystemExit(f"{name} {tags or ''}: no JSON (rc {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    stats = next(iter(output["stats"].values()))
    results = {task["task"]["name"]: next(iter(task["hosts"].values()))
               for play in output["plays"] for task in play["tasks"]}
    if proc.returncode != 0:
        failed = {k: v.get("msg") for k, v in results.items() if v.get("failed")}
        raise SystemExit(f"{name} {tags or ''} failed (rc {proc.returncode}): {json.dumps(failed, indent=1)}")
    return seconds, stats, results


def result_of(results, task_name):
    """The JSON callback names role tasks "<role> : <name>"."""
    return next((result for name, result in results.items() if name.split(" : ")[-1] == task_name), {})


def moved_by_plan_b(results):
    moves = result_of(results, "Move the messages of queues no worker consumes any more")
    return {r["item"]: r.get("moved", 0) for r in moves.get("results", [])}


def task_runs(env, prefix):
    connection = psycopg2.connect(host="127.0.0.1", port=int(env.get("DB_PORT", 5432)), user=env["POSTGRES_USER"],
                                  password=env["POSTGRES_PASSWORD"], dbname=env["POSTGRES_DB"])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT task_id, count(*) FROM task_run WHERE task_id LIKE %s GROUP BY task_id",
                           (prefix + "-%",))
            return dict(cursor.fetchall())
    finally:
        connection.close()


def queue_page_backlog(port, prefix, count):
    """A backlog on low_priority, so that plan_b has messages to move (or to strand)."""
    producer = Producer(port, 0, 1, prefix, 60)
    ids = []
    for n in range(count):
        task_id = f"{prefix}-{n}"
        if producer.send(task_id, "crawler.tasks.process_page_content", [n]):
            ids.append(task_id)
    return ids


def push_release(app_dir):
    """A new app revision on the checkout's origin: the deploy pulls it, and plan B must stop the
    pools before it checks the old revision out again (the checkout rewrites .gitignore)."""
    origin = subprocess.run(["git", "-C", app_dir, "remote", "get-url", "origin"], capture_output=True, text=True,
                            check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as clone:
        git = ["git", "-C", clone, "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        subprocess.run(["git", "clone", "-q", origin, clone], check=True)
        with open(f"{clone}/.gitignore", "a", encoding="utf-8") as ignore:
            ignore.write(f"# release {int(time.time())}\n")
        subprocess.run(git + ["commit", "-q", "-am", "A release after the first deploy"], check=True)
        subprocess.run(git + ["push", "-q", "origin", "HEAD:main"], check=True)


class ContainerEvents:
    """When the project's containers stopped and started (docker events, ns), watched live: the daemon
    keeps only its last 256 events for a later query, and healthchecks' exec events push them out."""

    def __init__(self, project="pilito-demo"):
        self.process = subprocess.Popen(
            ["docker", "events", "--filter", "event=die", "--filter", "event=start",
             "--filter", f"label=com.docker.compose.project={project}",
             "--format", '{{.TimeNano}} {{.Action}} {{index .Actor.Attributes "com.docker.compose.service"}}'],
            stdout=subprocess.PIPE, text=True)

    def stop(self):
        """[(ns, "die" or "start", service)], oldest first."""
        time.sleep(1)  # the last events reach the stream
        self.process.terminate()
        out = self.process.communicate(timeout=30)[0].split("\n")
        return sorted((int(ns), action, service) for ns, action, service in (line.split() for line in out if line.strip()))


def stops(events, services=("celery_ai", "celery_worker")):
    """When these services' containers stopped (ns)."""
    return [ns for ns, action, service in events if action == "die" and service in services]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inventory", default=str(ROOT / "inventories/local"))
    parser.add_argument("--app-dir", default=os.environ.get("DEMO_DIR", "/srv/pilito-demo") + "/app")
    parser.add_argument("--tasks", type=int, default=600, help="tasks the producer sends (bounded)")
    parser.add_argument("--rate", type=float, default=4.0, help="tasks per second")
    parser.add_argument("--backlog", type=int, default=400, help="page jobs queued just before plan_b")
    parser.add_argument("--drain-seconds", type=int, default=300, help="longest wait for every task to run")
    parser.add_argument("--report", help="write the JSON report here")
    args = parser.parse_args()
    env = read_env(args.app_dir)
    port = int(env.get("WEB_PORT", 8000))
    run_id = f"rb{int(time.time())}"

    producer = Producer(port, args.tasks, args.rate, run_id, deadline_seconds=1800)
    producer.start()
    steps = []

    def step(name, tags=None):
        seconds, stats, results = playbook(name, args.inventory, tags)
        steps.append(dict(step=tags or name, seconds=round(seconds, 1), changed=stats["changed"],
                          target_seconds=TARGETS.get(tags)))
        print(f"{tags or name:12} {seconds:6.1f} s  changed={stats['changed']}", file=sys.stderr, flush=True)
        return results

    push_release(args.app_dir)
    step("deploy")
    step("rollback", "plan_a")
    step("rollback", "plan_a")
    step("deploy")
    backlog = queue_page_backlog(port, run_id + "-backlog", args.backlog)
    container_events = ContainerEvents()
    moved = moved_by_plan_b(step("rollback", "plan_b"))
    plan_b_order = dict(pools_stopped_ns=stops(container_events.stop()),
                        code_checked_out_ns=os.stat(f"{args.app_dir}/.gitignore").st_mtime_ns)
    step("rollback", "plan_b")
    step("deploy")
    step("rollback", "plan_c")
    full = step("rollback", "plan_c_full")
    saved = result_of(full, "Save every queued message").get("messages")
    restored = result_of(full, "Put the saved messages back").get("messages")
    producer.join()

    expected = producer.sent + backlog
    deadline = time.monotonic() + args.drain_seconds
    while True:
        runs = task_runs(env, run_id)
        missing = [task_id for task_id in expected if task_id not in runs]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    report = dict(
        run_id=run_id,
        steps=steps,
        producer=dict(sent=len(producer.sent), rate_per_second=args.rate, unsent=producer.unsent,
                      retried=sorted(producer.retried), routed_to=producer.queues),
        backlog_before_plan_b=len(backlog),
        moved_by_plan_b=moved,
        plan_b_order=plan_b_order,
        plan_c_full_messages=dict(saved=saved, restored=restored),
        tasks_expected=len(expected),
        ran_once=sum(1 for task_id in expected if runs.get(task_id) == 1),
        ran_more_than_once={task_id: runs[task_id] for task_id in expected if runs.get(task_id, 0) > 1},
        missing=missing,
        expected_ids=expected,
    )
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({key: value for key, value in report.items() if key != "expected_ids"}, indent=2))
    for item in steps:
        if item["target_seconds"]:
            verdict = "met" if item["seconds"] <= item["target_seconds"] else "MISSED"
            print(f"{item['step']:12} {item['seconds']:6.1f} s (target {item['target_seconds']} s: {verdict})",
                  file=sys.stderr)
    print(f"tasks: {report['ran_once']} of {len(expected)} ran exactly once; "
          f"{len(report['ran_more_than_once'])} more than once; {len(missing)} missing", file=sys.stderr)


if __name__ == "__main__":
    main()
