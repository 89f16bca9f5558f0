"""Speed of celery_queue_length, celery_queue_check and celery_queue_move on a real Redis (the
targets: length of 3 queues holding 1,000,000 messages in <= 100 ms a call; moving 100,000 in
<= 10 s; the check, run every minute, well under a second of its own).

    .venv/bin/python benchmarks/redis_queue_bench.py            # starts its own Redis container
    .venv/bin/python benchmarks/redis_queue_bench.py --redis-url redis://127.0.0.1:6379/15

The timings are of the modules' own functions against the server; a whole `ansible-playbook` run of
the length module is timed too, since that is what an operator waits for.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "build/collections"))

from ansible_collections.pilito.priority_queue.plugins.modules.celery_latency_probe import probe_message  # noqa: E402
from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import (  # noqa: E402
    SENT_AT_HEADER,
    UNACKED_KEY,
    measure,
)
from ansible_collections.pilito.priority_queue.plugins.modules.celery_queue_move import move  # noqa: E402

QUEUES = ["high_priority", "default", "low_priority"]
STEPS = [0, 3, 6, 9]


def start_redis():
    images = subprocess.run([ROOT / "scripts/demo_images.sh"], capture_output=True, text=True, check=True).stdout
    image = dict(line.split("=", 1) for line in images.splitlines())["REDIS_IMAGE"]
    name = f"pilito-bench-redis-{os.getpid()}"
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "-p", "127.0.0.1::6379", image],
                   check=True, capture_output=True)
    port = subprocess.run(["docker", "port", name, "6379"], capture_output=True, text=True, check=True).stdout
    url = f"redis://127.0.0.1:{port.splitlines()[0].rsplit(':', maxsplit=1)[-1]}/0"
    for _attempt in range(100):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    return name, url


def fill(client, queue, count, priority=0):
    """Real-sized Celery messages (about 800 bytes, stamped with a send time as the rendered config
    stamps them), pushed in large batches."""
    key = queue if not priority else f"{queue}\x06\x16{priority}"
    message = probe_message(queue, "x" * 36, "y" * 36)
    message["headers"][SENT_AT_HEADER] = time.time()
    template = json.dumps(message)
    chunk = 10000
    for start in range(0, count, chunk):
        client.lpush(key, *([template] * min(chunk, count - start)))


def timed(fn, repeat):
    samples = []
    for _call in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def reserve(client, queue, count):
    """Messages workers reserved: entries of kombu's unacked hash, as [message, exchange, routing key]."""
    entry = json.dumps([probe_message(queue, "x" * 36, "y" * 36), "", queue])
    chunk = 10000
    for start in range(0, count, chunk):
        client.hset(UNACKED_KEY, mapping={f"tag-{n}": entry for n in range(start, min(start + chunk, count))})


def playbook_seconds(url, module="celery_queue_length", **options):
    """Wall time of one ansible-playbook run of the module, as an operator or a cron entry waits for it."""
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {f"pilito.priority_queue.{module}": {"broker_url": url, "queues": QUEUES, **options}}]}]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "play.yml"
        path.write_text(json.dumps(play))
        started = time.perf_counter()
        subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(path),
                        "-e", f"ansible_python_interpreter={sys.executable}"], check=False, capture_output=True,
                       env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "build/collections")})
        return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--redis-url", help="use this Redis (its database is flushed) instead of a new container")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--move", type=int, default=100_000)
    parser.add_argument("--reserved", type=int, default=10_000, help="of the messages, how many workers hold")
    args = parser.parse_args()
    container, url = (None, args.redis_url) if args.redis_url else start_redis()
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        started = time.perf_counter()
        share = args.messages // 10
        fill(client, "high_priority", share)               # 10 %
        fill(client, "default", share * 2)                 # 20 %
        fill(client, "low_priority", share * 6)            # 60 %
        fill(client, "low_priority", args.messages - share * 9 - args.reserved, priority=6)
        reserve(client, "low_priority", args.reserved)
        print(f"filled {args.messages:,} messages in {time.perf_counter() - started:.1f} s; "
              f"redis used_memory {client.info('memory')['used_memory_human']}")

        result = measure(client, QUEUES, STEPS)
        assert sum(q["total"] for q in result.values()) == args.messages, result
        samples = timed(lambda: measure(client, QUEUES, STEPS), 50)
        print(f"celery_queue_length, 3 queues, {args.messages:,} messages: p50 {statistics.median(samples) * 1000:.2f} ms, "
              f"max {max(samples) * 1000:.2f} ms over 50 calls (target <= 100 ms)")
        print(f"  whole ansible-playbook run of the module: {playbook_seconds(url):.2f} s")
        samples = timed(lambda: measure(client, QUEUES, STEPS, count_unacked=False), 50)
        print(f"  the same without the {args.reserved:,} reserved messages (no scan of the unacked hash): "
              f"p50 {statistics.median(samples) * 1000:.2f} ms")
        print(f"celery_queue_check, same {args.messages:,} messages, whole ansible-playbook run: "
              f"{playbook_seconds(url, 'celery_queue_check', consumers=False):.2f} s without asking the workers, "
              f"{playbook_seconds(url, 'celery_queue_check'):.2f} s asking them (workers_timeout 1 s)")

        client.flushdb()
        fill(client, "low_priority", args.move)
        started = time.perf_counter()
        moved = move(client, "low_priority", "celery", STEPS)
        elapsed = time.perf_counter() - started
        assert sum(moved.values()) == args.move and client.llen("celery") == args.move
        print(f"celery_queue_move of {args.move:,} messages: {elapsed:.2f} s "
              f"({args.move / elapsed:,.0f} messages/s; target <= 10 s)")
    finally:
        client.flushdb()
        if container:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


if __name__ == "__main__":
    main()
