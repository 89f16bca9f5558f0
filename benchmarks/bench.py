"""make bench: the runbook's performance claims (section 9) measured on the demo host, side by side.

    make bench                      # about 20 minutes here; make bench QUICK=1: about 3
    .venv/bin/python benchmarks/bench.py [--quick] [--scale 0.001]

Three topologies of the same demo app, on the same machine, behind the same backlogs, one after
the other: 1. before (one queue, one pool of 2 processes, the runbook's "before"); 2. priorities
(one queue with Celery message priorities on the AI task, prefetch as Celery's default: what many
users try first; benchmarks/priorities/celery_priority.py); 3. the collection (deploy.yml: a queue and
a pool of its own for AI work, prefetch 1, late acks). For each: how long an AI chat reply waits in
the queue (the app's own /api/chat/, which times it from its send to a worker's start) behind
backlogs of crawl and page tasks, and in a burst of 50 chats at once; the crawl throughput. Then
deploy.yml (first run and unchanged rerun) and each rollback plan, timed against the runbook's
budget while chats and page tasks keep arriving: the worst AI wait during each, and every task
counted in the app's task_run table. Last, the fault matrix (not with --quick or --no-faults): the
plain app's pools, broker and controller killed under load (molecule/plain's fault test).

It starts the demo stack afresh in its before state (scripts/demo.sh up) with task durations scaled
by --scale (0.001: a crawl takes 10 ms, a page 5 ms, an AI reply 2 ms), so that the wait behind
10,000 crawls is measured rather than estimated; the waits of topologies 1 and 2 grow with the
durations, those of 3 do not. Traffic goes only to the demo's published ports on 127.0.0.1; every
loop is bounded in count and time. Writes benchmarks/results/<date>.md, .csv (every sample) and
.png (the wait against the backlog, log scales, a line per topology).
"""

import argparse
import csv
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg2
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rollback_bench import Producer, playbook, read_env  # noqa: E402 # pylint: disable=wrong-import-position

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEMO_DIR = os.environ.get("DEMO_DIR", "/srv/pilito-demo")
APP_DIR = f"{DEMO_DIR}/app"
INVENTORY = str(ROOT / "inventories/local")
QUEUES = ["celery", "high_priority", "default", "low_priority"]
SEP = "\x06\x16"
TOPOLOGIES = {"before": "1. before: one queue, one pool",
              "priorities": "2. one queue, message priorities",
              "collection": "3. this collection's topology"}
BUDGETS = {"deploy": 60, "deploy rerun": 30, "plan_a": 10, "plan_b": 45, "plan_c": 30, "plan_c_full": 30}
CRAWL = "crawler.tasks.crawl_website_task"
# One chat at a time, the next sent this long after the previous reply, as users' chats arrive apart: sent
# at once, it would find the AI pool still busy with the previous one (the demo writes an audit row after
# each task), which measures the pool's capacity (the burst does that), not the wait behind the backlog.
PROBE_GAP_SECONDS = 0.1


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values, share):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else float("nan")


def summary(waits_ms):
    return dict(n=len(waits_ms), p50=percentile(waits_ms, 0.5), p95=percentile(waits_ms, 0.95),
                p99=percentile(waits_ms, 0.99), max=max(waits_ms) if waits_ms else float("nan"))


class Demo:
    """The demo host as the bench drives it: its web port, its broker and its database."""

    def __init__(self):
        self.env = read_env(APP_DIR)
        self.web = f"http://127.0.0.1:{self.env.get('WEB_PORT', 8000)}"
        self.broker = redis.Redis(host="127.0.0.1", port=6379, db=0)
        self.keys = [queue + (f"{SEP}{step}" if step else "") for queue in QUEUES for step in range(10)]

    def post(self, path, body, timeout):
        request = urllib.request.Request(self.web + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)

    def chat(self, timeout=600):
        """One chat message through the app; its reply says how long it waited in the queue."""
        return self.post("/api/chat/", {"message": "bench", "timeout": timeout}, timeout + 30)

    def backlog(self, count, crawls_only=False):
        """Queues count tasks through the app, crawls and page jobs in the runbook's proportion (15 to 10)."""
        crawls = count if crawls_only else round(count * 0.6)
        pages = count - crawls
        while crawls or pages:
            chunk_crawls, chunk_pages = min(crawls, 10000), min(pages, 10000)
            self.post("/api/backlog/", {"crawls": chunk_crawls, "pages": chunk_pages}, 300)
            crawls, pages = crawls - chunk_crawls, pages - chunk_pages

    def waiting(self):
        """Crawl and page messages waiting: every list of every queue but high_priority, where none go."""
        pipe = self.broker.pipeline(transaction=False)
        for key in self.keys:
            if not key.startswith("high_priority"):
                pipe.llen(key)
        return sum(pipe.execute())

    def purge(self):
        """Empties every waiting list; what workers hold finishes."""
        self.broker.delete(*self.keys)

    def crawls_done(self):
        with psycopg2.connect(host="127.0.0.1", port=int(self.env.get("DB_PORT", 5432)), user=self.env["POSTGRES_USER"],
                              password=self.env["POSTGRES_PASSWORD"], dbname=self.env["POSTGRES_DB"]) as connection:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM task_run WHERE task_name = %s", (CRAWL,))
                return cursor.fetchone()[0]

    def compose(self, *args, files=("docker-compose.yml",)):
        argv = ["docker", "compose", "--project-directory", APP_DIR]
        for name in files:
            argv += ["-f", name if name.startswith("/") else f"{APP_DIR}/{name}"]
        return subprocess.run(argv + list(args), capture_output=True, text=True, check=True, timeout=600)


def measure_waits(demo, topology, levels, probes, deadline_seconds, samples):
    """AI waits behind each backlog: before every probe the backlog is topped up to its level, so each
    chat is sent behind at least that many crawl and page tasks (fewer probes where each waits long)."""
    rows = {}
    for level in levels:
        demo.purge()
        waits, ahead_seen = [], []
        deadline = time.monotonic() + deadline_seconds
        for _probe in range(probes(topology, level)):
            ahead = demo.waiting()
            if ahead < level:
                demo.backlog(level - ahead)
                ahead = demo.waiting()
            reply = demo.chat()
            waits.append(reply["queue_wait_seconds"] * 1000)
            ahead_seen.append(ahead)
            samples.append(dict(topology=topology, kind="backlog", backlog=level, ahead=ahead,
                                wait_ms=round(waits[-1], 3), queue=reply["queue"]))
            if time.monotonic() > deadline:
                break
            time.sleep(PROBE_GAP_SECONDS)
        rows[level] = dict(summary(waits), ahead=round(statistics.mean(ahead_seen)) if ahead_seen else 0)
        log(f"{topology}: backlog {level}: p50 {rows[level]['p50']:.1f} ms, p99 {rows[level]['p99']:.1f} ms "
            f"(n {rows[level]['n']}, {rows[level]['ahead']} ahead on average)")
    demo.purge()
    return rows


def measure_burst(demo, topology, size, backlog, samples):
    """size chats at once, behind a backlog."""
    demo.purge()
    demo.backlog(backlog)
    replies, errors = [], []

    def one():
        try:
            replies.append(demo.chat())
        except (OSError, ValueError) as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=one) for _number in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    waits = [reply["queue_wait_seconds"] * 1000 for reply in replies]
    for wait in waits:
        samples.append(dict(topology=topology, kind="burst", backlog=backlog, ahead=backlog, wait_ms=round(wait, 3),
                            queue=""))
    demo.purge()
    result = dict(summary(waits), errors=len(errors))
    log(f"{topology}: burst of {size}: p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms, {len(errors)} failed")
    return result


def measure_throughput(demo, topology, seconds):
    """Crawls finished per minute with a crawl backlog larger than the window can drain (topology 3
    limits crawls to 30 a minute: a small backlog is enough, and a large one would sit in its worker)."""
    demo.purge()
    demo.backlog(100 if topology == "collection" else int(seconds * 300), crawls_only=True)
    time.sleep(3)
    start, before = time.monotonic(), demo.crawls_done()
    time.sleep(seconds)
    done = demo.crawls_done() - before
    per_minute = round(done * 60 / (time.monotonic() - start))
    demo.purge()
    log(f"{topology}: {per_minute} crawls a minute")
    return per_minute


class PageProducer(Producer):
    """The rollback bench's producer (page jobs, chat replies and knowledge counts through /api/tasks/,
    each with an id of this run), stopped when the operation is over."""

    def __init__(self, demo, prefix, rate):
        super().__init__(int(demo.env.get("WEB_PORT", 8000)), 100000, rate, prefix, 600)


class ChatWatcher(threading.Thread):
    """A chat message every `interval` seconds, each in its own thread as a user's would be, bounded in
    count; keeps each reply's wait and task id, and the sends that found the app down."""

    def __init__(self, demo, interval, count):
        super().__init__(daemon=True)
        self.demo, self.interval, self.count = demo, interval, count
        self.replies, self.failed, self.stopped, self.threads = [], [], threading.Event(), []

    def one(self):
        sent = time.monotonic()
        try:
            reply = self.demo.chat(timeout=120)
            self.replies.append((sent, reply["queue_wait_seconds"] * 1000, reply["task_id"]))
        except (OSError, ValueError, KeyError) as exc:
            self.failed.append((sent, str(exc)[:120]))

    def run(self):
        for _n in range(self.count):
            if self.stopped.is_set():
                break
            thread = threading.Thread(target=self.one, daemon=True)
            thread.start()
            self.threads.append(thread)
            time.sleep(self.interval)

    def finish(self):
        self.stopped.set()
        self.join(timeout=60)
        for thread in self.threads:
            thread.join(timeout=180)

    def worst_between(self, start, end):
        waits = [wait for sent, wait, _task in list(self.replies) if start <= sent <= end]
        failed = sum(1 for sent, _error in list(self.failed) if start <= sent <= end)
        return (max(waits) if waits else float("nan")), len(waits), failed


def locate(demo, ids):
    """Where each of these tasks waits on the broker: queue list or reserved (unacked)."""
    wanted, found = set(ids), {}
    for key in demo.broker.keys("*"):
        name = key.decode(errors="replace")
        kind = demo.broker.type(key)
        payloads = (demo.broker.lrange(key, 0, -1) if kind == b"list" else
                    list(demo.broker.hvals(key)) if name == "unacked" else [])
        for payload in payloads:
            try:
                message = json.loads(payload)
                message = message[0] if isinstance(message, list) else message
                task_id = message.get("headers", {}).get("id")
            except (ValueError, AttributeError):
                continue
            if task_id in wanted:
                found[task_id] = name
    return found


def count_runs(demo, ids, deadline_seconds):
    """Waits until each task has run (or the deadline); how many ran once, more than once, never, and where
    those that never ran wait."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        runs = runs_of(demo.env, ids)
        if all(task in runs for task in ids) or time.monotonic() > deadline:
            break
        time.sleep(1)
    missing = [task for task in ids if task not in runs]
    where = locate(demo, missing) if missing else {}
    return dict(sent=len(ids), once=sum(1 for task in ids if runs.get(task) == 1),
                twice=sum(1 for task in ids if runs.get(task, 0) > 1), missing=len(missing),
                waiting={queue: sum(1 for q in where.values() if q == queue) for queue in set(where.values())},
                missing_ids=missing[:10])


def operation(demo, name, playbook_name, tags=None):
    """Times one playbook run while chats (one every 0.5 s, each as a user's) and page tasks (2 a second)
    arrive; the worst wait of a chat sent while it ran; then every task sent, counted in task_run."""
    watcher, producer = ChatWatcher(demo, 0.5, 600), PageProducer(demo, f"bench{int(time.time() * 1000)}", 2.0)
    watcher.start()
    producer.start()
    start = time.monotonic()
    seconds, stats, _results = playbook(playbook_name, INVENTORY, tags)
    end = time.monotonic()
    time.sleep(2)  # the chats sent at the end are answered too
    watcher.finish()
    producer.stopped.set()
    producer.join(timeout=60)
    worst, chats, failed = watcher.worst_between(start, end)
    counted = count_runs(demo, list(producer.sent) + [task for _sent, _wait, task in watcher.replies], 120)
    log(f"{name}: {seconds:.1f} s (budget {BUDGETS.get(name, '-')} s), changed={stats['changed']}, worst AI wait "
        f"{worst:.1f} ms over {chats} chats, {failed} chats' requests failed; tasks {counted}, "
        f"routed to {producer.queues}")
    return dict(seconds=round(seconds, 1), changed=stats["changed"], worst_wait_ms=worst, chats=chats,
                chats_failed=failed, budget=BUDGETS.get(name), tasks=counted)


def runs_of(env, ids):
    """How many times each of these tasks ran, from the app's task_run table."""
    connection = psycopg2.connect(host="127.0.0.1", port=int(env.get("DB_PORT", 5432)), user=env["POSTGRES_USER"],
                                  password=env["POSTGRES_PASSWORD"], dbname=env["POSTGRES_DB"])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT task_id, count(*) FROM task_run WHERE task_id = ANY(%s) GROUP BY task_id", (ids,))
            return dict(cursor.fetchall())
    finally:
        connection.close()


def versions(demo):
    def run(*argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout.strip()
        except OSError:
            return "?"

    worker = run("docker", "compose", "--project-directory", APP_DIR, "-f", f"{APP_DIR}/docker-compose.yml", "exec",
                 "-T", "celery_worker", "python3", "-c",
                 "import celery, kombu, sys; print(celery.__version__, kombu.__version__, sys.version.split()[0])")
    celery_version, kombu_version, worker_python = (worker.split() + ["?"] * 3)[:3]
    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), "0")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"machine": f"{os.cpu_count()} CPUs ({cpu}), {int(memory) // 1024 ** 2} GiB, Linux {platform.release()}",
            "Docker": run("docker", "version", "--format", "{{.Server.Version}}"),
            "Compose": run("docker", "compose", "version", "--short"),
            "Celery (workers)": celery_version, "kombu (workers)": kombu_version, "Python (workers)": worker_python,
            "Redis": demo.broker.info("server").get("redis_version", "?"),
            "ansible-core": run(sys.executable, "-c", "import ansible; print(ansible.__version__)")}


def priorities_override(path):
    """A compose file that gives web, beat and the worker topology 2's config module."""
    mount = f"{ROOT / 'benchmarks/priorities'}:/opt/bench_priorities:ro"
    services = {name: {"environment": {"PYTHONPATH": "/opt/bench_priorities"}, "volumes": [mount]}
                for name in ("web", "celery_beat", "celery_worker")}
    Path(path).write_text(json.dumps({"services": services}))
    return path


def plot(results, levels, path):
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    figure, axis = plt.subplots(figsize=(8, 5))
    for (topology, label), color in zip(TOPOLOGIES.items(), ("tab:red", "tab:orange", "tab:green")):
        if topology not in results:
            continue
        rows = results[topology]["backlog"]
        xs = [level for level in levels if level in rows and rows[level]["n"]]
        axis.plot(xs, [max(rows[x]["p99"], 0.01) for x in xs], marker="o", color=color, label=f"{label}: p99")
        axis.plot(xs, [max(rows[x]["p50"], 0.01) for x in xs], linestyle="--", color=color, alpha=0.5,
                  label=f"{label}: p50")
    axis.set_xscale("symlog", linthresh=10)
    axis.set_yscale("log")
    axis.set_xlabel("crawl and page tasks queued ahead")
    axis.set_ylabel("AI chat reply's wait in the queue (ms)")
    axis.set_title("AI reply wait behind a crawl backlog (demo host)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def fmt(value, digits=1):
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def targets(results, operations, levels):
    checks = []
    ours = results.get("collection", {}).get("backlog", {})
    if ours:
        worst = max(row["p99"] for row in ours.values() if row["n"])
        checks.append(("collection: AI p99 <= 10 ms at every backlog", f"worst p99 {fmt(worst, 2)} ms", worst <= 10))
        top, zero = max(level for level in levels if level in ours), 0
        ratio = ours[top]["p99"] / ours[zero]["p99"] if ours.get(zero, {}).get("p99") else float("nan")
        checks.append((f"collection: p99({top:,}) / p99(0) <= 1.5", fmt(ratio, 2), ratio <= 1.5))
    before = results.get("before", {}).get("backlog", {})
    if ours and 1000 in ours and 1000 in before:
        ratio = before[1000]["p99"] / ours[1000]["p99"]
        checks.append(("collection vs before at 1,000: >= 1,000x lower p99", f"{fmt(ratio, 0)}x", ratio >= 1000))
    for name, op in operations.items():
        if op["budget"]:
            checks.append((f"{name} <= {op['budget']} s", f"{op['seconds']} s", op["seconds"] <= op["budget"]))
    if operations:
        never = sum(op["tasks"]["missing"] for op in operations.values())
        checks.append(("no task lost during the operations", f"{never} never ran", never == 0))
    worst_op = max((op["worst_wait_ms"] for op in operations.values() if not math.isnan(op["worst_wait_ms"])),
                   default=float("nan"))
    if operations:
        checks.append(("worst AI wait during a deploy or a rollback plan <= 1 s", f"{fmt(worst_op, 1)} ms",
                       worst_op <= 1000))
    return checks


def measure_faults():
    """The fault matrix: the plain app (scripts/plain_app.sh) deployed, then molecule plain's fault
    test against it (pools, broker and controller killed under load, a full backup disk), which
    writes build/fault_matrix.json; the plain app removed after."""
    plain = {**os.environ, "PLAIN_DIR": os.environ.get("PLAIN_DIR", "/srv/pilito-plain"),
             "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "build" / "collections")}
    matrix = ROOT / "build" / "fault_matrix.json"
    matrix.unlink(missing_ok=True)
    log("faults: the plain app deployed, then its pools, broker and controller killed under load")
    try:
        subprocess.run([str(ROOT / "scripts/plain_app.sh"), "up"], check=True, capture_output=True, env=plain,
                       timeout=900)
        subprocess.run(["ansible-playbook", "-i", str(ROOT / "molecule/plain/inventory"),
                        str(ROOT / "playbooks/deploy.yml")], check=True, capture_output=True, env=plain, timeout=900)
        test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(ROOT / "molecule/plain/tests/test_plain_faults.py")],
                              capture_output=True, text=True, env=plain, timeout=1800, check=False)
        if test.returncode != 0:
            log("faults: the fault test failed (the matrix says where):\n" + test.stdout[-3000:])
    finally:
        subprocess.run([str(ROOT / "scripts/plain_app.sh"), "down"], capture_output=True, env=plain, check=False,
                       timeout=600)
    return json.loads(matrix.read_text()) if matrix.exists() else None


def fault_lines(matrix):
    if not matrix:
        return []
    lines = ["## Faults, with every kind of task arriving (the plain app, no person acting)", "",
             "| fault | every queue consumed again (s) | dead worker's tasks back on their queue (s) | "
             "redelivered | worst AI wait (s) | tasks sent | ran once | twice | lost |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in matrix["faults"]:
        back = "refused before any change" if row.get("refused") else fmt(row.get("back_seconds"), 1)
        lines.append(f"| {row['fault']} | {back} | {fmt(row.get('requeued_seconds'), 1)} | {row['redelivered']} | "
                     f"{fmt(row.get('worst_ai_wait_seconds'), 2)} | {row['sent']} | {row['ran_once']} | "
                     f"{row['ran_twice']} | {row['lost']} |")
    totals = matrix["totals"]
    lines += ["", f"In all: {totals['sent']} tasks sent, {totals['ran_once']} ran once, {totals['ran_twice']} twice "
              f"({totals['redelivered']} redelivered: they were running when their worker died), {totals['lost']} "
              "lost. `molecule/plain/tests/test_plain_faults.py`, which `make test` runs too.", ""]
    return lines


def report(args, results, operations, info, levels, started, paths, faults=None):
    lines = [f"# make bench, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"Command: `{' '.join([Path(sys.argv[0]).name] + sys.argv[1:]) or 'bench.py'}` "
             f"({'quick' if args.quick else 'full'}), {round((time.monotonic() - started) / 60, 1)} minutes. "
             f"Task durations scaled by {args.scale}: a crawl {10000 * args.scale:g} ms, a page job "
             f"{5000 * args.scale:g} ms, an AI reply {2000 * args.scale:g} ms; the waits of topologies 1 and 2 grow "
             "with them (at the runbook's durations, multiply the sleeping part by "
             f"{1 / args.scale:,.0f}), those of topology 3 do not.", ""]
    lines += ["| | |", "|---|---|"] + [f"| {key} | {value} |" for key, value in info.items()] + [""]
    lines += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'met' if ok else '**missed**'} |" for name, value, ok in
              targets(results, operations, levels)] + [""]
    lines += ["## AI chat reply: wait in the queue behind a backlog (ms)", "",
              "The wait is the app's own: from the web's send to the worker's start of the task. The backlog is "
              "topped up to its level before each chat; 'ahead' is what still waited on the queues when the chat "
              "was sent (tasks a worker had already reserved are not in it).", "",
              "| topology | backlog | ahead (mean) | n | p50 | p95 | p99 | max |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for topology, label in TOPOLOGIES.items():
        for level, row in results.get(topology, {}).get("backlog", {}).items():
            lines.append(f"| {label} | {level:,} | {row['ahead']:,} | {row['n']} | {fmt(row['p50'], 2)} | "
                         f"{fmt(row['p95'], 2)} | {fmt(row['p99'], 2)} | {fmt(row['max'], 2)} |")
    lines += ["", f"## A burst of {args.burst} chats at once, behind {args.burst_backlog} tasks (ms); crawl throughput",
              "", "| topology | n | p50 | p95 | p99 | max | failed | crawls a minute |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for topology, label in TOPOLOGIES.items():
        if topology in results:
            burst = results[topology]["burst"]
            lines.append(f"| {label} | {burst['n']} | {fmt(burst['p50'], 2)} | {fmt(burst['p95'], 2)} | "
                         f"{fmt(burst['p99'], 2)} | {fmt(burst['max'], 2)} | {burst['errors']} | "
                         f"{results[topology]['throughput']:,} |")
    lines += ["", "Topology 3's crawls run under its rate limit (30 a minute per worker), the price of keeping them "
              "from the AI pool's way; its page jobs are not limited.", ""]
    lines += ["## Operations, with chats and page tasks arriving", "",
              "| operation | seconds | budget | changed | worst AI wait (ms) | chats | chats whose request failed "
              "| tasks sent | ran once | more than once | never |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, op in operations.items():
        tasks = op["tasks"]
        never = f"{tasks['missing']}" + (f" ({', '.join(f'{n} in {q}' for q, n in tasks['waiting'].items())})"
                                         if tasks["waiting"] else "")
        lines.append(f"| {name} | {op['seconds']} | {op['budget'] or '-'} | {op['changed']} | "
                     f"{fmt(op['worst_wait_ms'])} | {op['chats']} | {op['chats_failed']} | {tasks['sent']} | "
                     f"{tasks['once']} | {tasks['twice']} | {never} |")
    lines += ["", "A chat whose request failed found the web down: the first deploy recreates the web container (its "
              "config changes), plan_c_full and plan_b restart it; such a chat's task id is unknown, so it is not in "
              "the count. Every other task sent is counted in the app's task_run table after the operation.", "",
              f"Every sample: `{paths['csv'].name}`. Plot: `{paths['png'].name}`.", "", f"![wait against backlog]({paths['png'].name})", ""]
    lines += fault_lines(faults)
    paths["md"].write_text("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--quick", action="store_true", help="backlogs up to 100, topologies 1 and 3, deploy and plan_a")
    parser.add_argument("--scale", type=float, default=0.001, help="the demo's DEMO_TIME_SCALE for the run")
    parser.add_argument("--no-faults", action="store_true", help="leave out the fault matrix (about 6 minutes)")
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--burst-backlog", type=int, default=100)
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES),
                        help="which to measure, of before, priorities, collection (the operations need collection)")
    args = parser.parse_args()
    chosen = args.topologies.split(",")
    if not set(chosen) <= set(TOPOLOGIES):
        parser.error(f"--topologies: choose among {', '.join(TOPOLOGIES)}, not {args.topologies}")
    started = time.monotonic()
    levels = [0, 10, 100] if args.quick else [0, 10, 100, 1000, 10000]

    def probes(topology, level):
        if args.quick:
            return 10 if topology == "collection" or level < 100 else 3
        if topology != "before":  # a tenth of a second each
            return 50
        return {0: 50, 10: 30, 100: 20, 1000: 3, 10000: 1}[level]  # behind 10,000: one wait of ~110 s

    log(f"the demo stack afresh in its before state (DEMO_TIME_SCALE={args.scale})")
    subprocess.run([str(ROOT / "scripts/demo.sh"), "up"], check=True, env={**os.environ, "DEMO_TIME_SCALE": str(args.scale)},
                   capture_output=True, timeout=900)
    demo = Demo()
    info = versions(demo)
    results, samples, operations = {}, [], {}

    def measure(topology):
        results[topology] = dict(backlog=measure_waits(demo, topology, levels, probes, 240, samples),
                                 burst=measure_burst(demo, topology, args.burst, args.burst_backlog, samples),
                                 throughput=measure_throughput(demo, topology, 10 if args.quick else 20))

    if "before" in chosen:
        measure("before")
    if "priorities" in chosen and not args.quick:
        override = priorities_override(Path(DEMO_DIR) / "bench_priorities.yml")
        demo.compose("up", "--detach", "--wait", files=("docker-compose.yml", str(override)))
        measure("priorities")
        demo.purge()
        demo.compose("up", "--detach", "--wait")  # back to the before state
        override.unlink()

    if "collection" in chosen:
        operations["deploy"] = operation(demo, "deploy", "deploy")
    if "collection" in chosen and not args.quick:
        operations["deploy rerun"] = operation(demo, "deploy rerun", "deploy")
    if "collection" in chosen:
        measure("collection")
        operations["plan_a"] = operation(demo, "plan_a", "rollback", "plan_a")
    if "collection" in chosen and not args.quick:
        operations["deploy after plan_a"] = operation(demo, "deploy after plan_a", "deploy")
        operations["plan_c"] = operation(demo, "plan_c", "rollback", "plan_c")
        operations["plan_c_full"] = operation(demo, "plan_c_full", "rollback", "plan_c_full")
        operations["plan_b"] = operation(demo, "plan_b", "rollback", "plan_b")

    faults = None
    if not args.quick and not args.no_faults:
        faults = measure_faults()

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M")
    paths = {kind: RESULTS / f"{stamp}{'-quick' if args.quick else ''}.{kind}" for kind in ("md", "csv", "png")}
    with paths["csv"].open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["topology", "kind", "backlog", "ahead", "wait_ms", "queue"],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(samples)
    plot(results, levels, paths["png"])
    report(args, results, operations, info, levels, started, paths, faults)
    log(f"report: {paths['md']} ({round((time.monotonic() - started) / 60, 1)} minutes)")
    print(paths["md"].read_text())


if __name__ == "__main__":
    main()
