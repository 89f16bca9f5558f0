"""How long a high-priority and a default-queue task wait for the general pool alone (plan A) behind
1,000 low-priority tasks, with and without the queue-order backport of the rendered config, in one run.

    python benchmarks/queue_order_bench.py [--restarts 3] [--backlog 1000] [--report FILE]

Needs the demo stack deployed (`make demo`, or `scripts/demo.sh up` and deploy.yml). It runs
`rollback.yml --tags plan_a`, so celery_worker serves every queue alone. Then, for each variant
("before": the rendered config with the backport switched off, as kombu 5.2.4 behaves unpatched;
"after": the config as rendered) and each restart of celery_worker (a new process, a new hash
seed): it queues the page backlog on low_priority through the app, puts one probe on
high_priority and one on default, and times until the worker takes each (bounded by --max-wait).
What the worker reports as its fetch order is recorded beside the times. At the end the rendered
config is restored and deploy.yml brings celery_ai back.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import redis
from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "build/collections"))
from rollback_bench import playbook  # noqa: E402
from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import probe_message  # noqa: E402

QUEUES = ["high_priority", "default", "low_priority"]
BACKPORT_LINE = "QUEUE_ORDER_BACKPORTED = _keep_queue_order()"


def worker_container(project):
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                          "--filter", "label=com.docker.compose.service=celery_worker"],
                         capture_output=True, text=True, check=True).stdout.split()
    if len(out) != 1:
        raise SystemExit(f"expected one running celery_worker container, found {len(out)}")
    return out[0]


def fetch_status(app, timeout=30):
    """Waits for the (re)started worker to answer; returns its node name and its own report."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = app.control.broadcast("priority_queue_fetch", arguments={"mode": "status"}, reply=True,
                                        timeout=1.0)
        for reply in replies or []:
            for node, status in reply.items():
                if node.startswith("celery_worker@") and "fetch_order" in status:
                    return node, status
        time.sleep(0.5)
    raise SystemExit("celery_worker did not answer within 30 s of its restart")


def pickup_waits(client, max_wait):
    """One probe on high_priority and one on default, sent together; seconds until each is taken."""
    payloads = {queue: json.dumps(probe_message(queue, f"order-bench-{uuid.uuid4()}", str(uuid.uuid4()),
                                                origin="pilito-queue-order-bench", ignore_result=True))
                for queue in ("high_priority", "default")}
    start = time.monotonic()
    for queue, payload in payloads.items():
        client.lpush(queue, payload)
    waits = {}
    while len(waits) < len(payloads) and time.monotonic() - start < max_wait:
        for queue, payload in payloads.items():
            if queue not in waits and client.lpos(queue, payload) is None:
                waits[queue] = round(time.monotonic() - start, 3)
        time.sleep(0.005)
    for queue, payload in payloads.items():
        if queue not in waits:
            client.lrem(queue, 1, payload)
            waits[queue] = None  # not taken within max_wait
    return waits


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restarts", type=int, default=3, help="worker restarts per variant (1-10)")
    parser.add_argument("--backlog", type=int, default=1000, help="low-priority page tasks queued (1-10000)")
    parser.add_argument("--max-wait", type=float, default=150.0, help="seconds a probe may wait (bounded)")
    parser.add_argument("--inventory", default=str(ROOT / "inventories/local"))
    parser.add_argument("--report", help="write the results as JSON here")
    args = parser.parse_args()
    if not (1 <= args.restarts <= 10 and 1 <= args.backlog <= 10000 and 0 < args.max_wait <= 600):
        raise SystemExit("--restarts 1-10, --backlog 1-10000, --max-wait up to 600 s")

    demo_dir = Path(os.environ.get("DEMO_DIR", "/srv/pilito-demo"))
    config = demo_dir / "app/priority_queue/celery_priority.py"
    rendered = config.read_text()
    if BACKPORT_LINE not in rendered:
        raise SystemExit(f"{config} has no backport line: deploy the current collection first")
    env = dict(line.split("=", 1) for line in (demo_dir / "app/.env").read_text().splitlines() if "=" in line)
    client = redis.Redis(port=int(env.get("REDIS_PORT", 6379)))
    app = Celery("bench", broker=f"redis://127.0.0.1:{env.get('REDIS_PORT', 6379)}/0", set_as_current=False)
    web = f"http://127.0.0.1:{env.get('WEB_PORT', 8000)}/api/backlog/"

    seconds, _stats, _results = playbook("rollback", args.inventory, tags="plan_a")
    print(f"plan_a: {seconds:.1f} s; celery_worker serves every queue alone")
    rows = []
    try:
        for variant in ("before", "after"):
            config.write_text(rendered if variant == "after" else
                              rendered.replace(BACKPORT_LINE, "QUEUE_ORDER_BACKPORTED = False"))
            for restart in range(1, args.restarts + 1):
                client.delete(*QUEUES)
                subprocess.run(["docker", "restart", "--time", "30", worker_container("pilito-demo")],
                               capture_output=True, check=True)
                node, status = fetch_status(app)
                body = json.dumps({"crawls": 0, "pages": args.backlog}).encode()
                urllib.request.urlopen(urllib.request.Request(web, body, {"Content-Type": "application/json"}),
                                       timeout=120).read()
                time.sleep(1.0)  # the worker is busy with the backlog
                waits = pickup_waits(client, args.max_wait)
                row = dict(variant=variant, restart=restart, node=node, backported=status["backported"],
                           fetch_order=status["fetch_order"], high_wait=waits["high_priority"],
                           default_wait=waits["default"], backlog=args.backlog)
                rows.append(row)
                print(json.dumps(row), flush=True)
                client.delete("low_priority")
    finally:
        config.write_text(rendered)
        client.delete(*QUEUES)
        subprocess.run(["docker", "restart", "--time", "30", worker_container("pilito-demo")],
                       capture_output=True, check=False)
    seconds, _stats, _results = playbook("deploy", args.inventory)
    print(f"deploy.yml: {seconds:.1f} s; celery_ai is back")

    def fmt(value):
        return f">{args.max_wait:.0f} s" if value is None else f"{value:.3f} s"

    print("\n| variant | restart | fetch order the worker reports | high_priority wait | default wait |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {row['restart']} | {', '.join(row['fetch_order'])} | "
              f"{fmt(row['high_wait'])} | {fmt(row['default_wait'])} |")
    if args.report:
        Path(args.report).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
