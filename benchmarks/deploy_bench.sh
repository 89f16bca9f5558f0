#!/usr/bin/env bash
# deploy.yml wall time (first run from the before state, then an unchanged run) and the
# high-priority pickup latency with 1,000 crawl tasks queued, before and after the deploy, in one
# run on the demo host.   Usage: make venv && benchmarks/deploy_bench.sh
# Task durations are scaled by DEMO_TIME_SCALE (default 0.01: a crawl takes 0.1 s) so that the
# "before" wait behind 1,000 crawls is measured rather than estimated.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$root/build/collections"
export DEMO_TIME_SCALE="${DEMO_TIME_SCALE:-0.01}" ANSIBLE_NOCOLOR=1
BACKLOG="${BACKLOG:-1000}"
PROBES="${PROBES:-200}"
# Seconds between probes: 0.05 is one AI message every 50 ms per probe stream (the module's default).
PROBE_INTERVAL="${PROBE_INTERVAL:-0.05}"
broker=redis://127.0.0.1:6379/0

probe() {  # queue count timeout -> "p50 p99 max" in milliseconds
  ansible localhost -c local -o -e "ansible_python_interpreter=$root/.venv/bin/python" \
    -m pilito.priority_queue.celery_latency_probe \
    -a "broker_url=$broker queue=$1 count=$2 probe_timeout=$3 max_seconds=900 interval=$PROBE_INTERVAL" \
  | python3 -c '
import json, math, sys
line = sys.stdin.read()
pickup = json.loads(line[line.index("{"):])["pickup"]
s = sorted(pickup["samples"])
p50, p99, top = pickup["p50"] * 1000, s[max(0, math.ceil(0.99 * len(s)) - 1)] * 1000, pickup["max"] * 1000
print(f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {top:.2f} ms over {len(s)} probes")'
}

backlog() {
  curl -fsS -d "{\"crawls\": $BACKLOG, \"pages\": 0}" http://127.0.0.1:8000/api/backlog/ >/dev/null
}

seconds() { python3 -c "import time; print(f'{time.time():.3f}')"; }

echo "== demo host in its before state (DEMO_TIME_SCALE=$DEMO_TIME_SCALE)"
scripts/demo.sh up
backlog
echo "before: a probe on 'celery' behind $BACKLOG queued crawls: $(probe celery 1 900)"

start=$(seconds)
ansible-playbook -i inventories/local playbooks/deploy.yml >/tmp/deploy_bench_first.log
first=$(python3 -c "print(f'{$(seconds) - $start:.1f}')")
start=$(seconds)
ansible-playbook -i inventories/local playbooks/deploy.yml >/tmp/deploy_bench_second.log
second=$(python3 -c "print(f'{$(seconds) - $start:.1f}')")
echo "deploy.yml first run: $first s ($(grep -o 'changed=[0-9]*' /tmp/deploy_bench_first.log | tail -1)); unchanged second run: $second s ($(grep -o 'changed=[0-9]*' /tmp/deploy_bench_second.log | tail -1))"

backlog
echo "after: $PROBES probes on 'high_priority' with $BACKLOG crawls queued: $(probe high_priority "$PROBES" 30)"
echo "queue lengths: $(ansible localhost -c local -o -e "ansible_python_interpreter=$root/.venv/bin/python" \
  -m pilito.priority_queue.celery_queue_length -a "broker_url=$broker queues=high_priority,default,low_priority" \
  | python3 -c 'import json,sys; l=sys.stdin.read(); r=json.loads(l[l.index("{"):]); print({q: v["total"] for q, v in r["queues"].items()})')"
