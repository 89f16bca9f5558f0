"""How long one worker process takes to run a queue of quick tasks, with and without the rendered
config's tick-after-timers backport (kombu 5.3.0's fix for celery issue #7718), in one run.

    python benchmarks/fetch_after_ack_bench.py [--messages 12] [--rounds 3]

Needs the demo stack up (its Redis on 127.0.0.1:6379; database 7 is used and emptied). Each round
starts a worker in the demo app image (kombu 5.2.4) with the topology's settings (prefetch 1, late
acks) and one process, on a queue holding --messages quick tasks, and times from the first task
run until every task has run. "before" is the rendered config with the backport switched off, "after" the
config as rendered. Bounded: a round stops after 120 s.
"""

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "tests"), str(ROOT / "build" / "collections")]
from worker_harness import app_dir, record_message  # noqa: E402 # pylint: disable=wrong-import-position

DATABASE = 7


def demo_redis_container():
    out = subprocess.run(["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=pilito-demo",
                          "--filter", "label=com.docker.compose.service=redis"], capture_output=True, text=True, check=True)
    if not out.stdout.split():
        sys.exit("the demo stack is not up: make demo")
    return out.stdout.split()[0]


def app_image():
    return subprocess.run(["docker", "ps", "--format", "{{.Image}}", "--filter", "label=com.docker.compose.project=pilito-demo",
                           "--filter", "label=com.docker.compose.service=web"], capture_output=True, text=True,
                          check=True).stdout.split()[0]


def one_round(client, image, redis_container, tick_backport, messages):
    directory = Path(tempfile.mkdtemp(prefix="pilito-fetch-"))
    directory.chmod(0o755)
    app_dir(directory, tick_backport=tick_backport)
    client.flushdb()
    for _number in range(messages):
        client.lpush("default", record_message("default"))
    name = f"pilito-fetch-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "run", "-d", "--name", name, "--network", f"container:{redis_container}",
                    "-v", f"{directory}:/orderapp:ro", "-w", "/orderapp", "-e", f"BROKER=redis://127.0.0.1:6379/{DATABASE}",
                    "-e", "PYTHONPATH=/orderapp", image, "python3", "-m", "celery", "-A", "orderapp", "worker",
                    "-Q", "default", "-c", "1", "--without-gossip", "--without-mingle", "-l", "INFO",
                    "--hostname", "fetch@bench"], capture_output=True, check=True)
    try:
        deadline = time.monotonic() + 120
        while client.llen("started") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        first = time.monotonic()
        while client.llen("started") < messages and time.monotonic() < deadline:
            time.sleep(0.01)
        return client.llen("started"), time.monotonic() - first
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    container = demo_redis_container()
    image = app_image()
    client = redis.Redis(host="127.0.0.1", port=6379, db=DATABASE)
    print(f"{args.messages} quick tasks, one worker process, prefetch 1, late acks, demo app image {image}")
    print("| variant | round | tasks run | seconds from the first to the last |")
    print("|---|---:|---:|---:|")
    for variant, tick_backport in (("before", False), ("after", True)):
        for number in range(1, args.rounds + 1):
            ran, seconds = one_round(client, image, container, tick_backport, args.messages)
            print(f"| {variant} | {number} | {ran} | {seconds:.2f} |", flush=True)
    client.flushdb()


if __name__ == "__main__":
    main()
