"""The network between a worker and its broker cut in the moment Redis hands the worker a message:
with kombu's BRPOP the message is popped, its reply is lost and no record of it is left. The
rendered config takes a message and records it as the worker's in one Redis script; the reply
lost, the worker puts the message back once it reaches the broker again. Real workers in the demo
image, real Redis, a real producer loading the rendered config; the cut is a proxy on the
worker's path to Redis (cut_proxy.py) that loses the reply handing a message over, and then all
traffic, until it is healed."""

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from conftest import docker, wait_until
# readable_tmp and workers are fixtures, used by name.
from worker_harness import (  # noqa: F401 # pylint: disable=unused-import
    app_dir,
    readable_tmp,
    workers,
)

PROXY_PORT = 6380
TASKS = 20
CUT_SECONDS = 3


def start_proxy(redis_server, demo_images, directory):
    shutil.copy(Path(__file__).with_name("cut_proxy.py"), directory / "cut_proxy.py")
    (directory / "cut_proxy.py").chmod(0o644)
    name = f"pilito-cut-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "--network", f"container:{redis_server.container}",
           "-v", f"{directory}:/proxy:ro", demo_images["APP_IMAGE"],
           "python3", "-u", "/proxy/cut_proxy.py", str(PROXY_PORT), "6379")
    wait_until(lambda: "listening" in proxy_log(name), "the proxy to listen", timeout=30)
    return name


def proxy_log(name):
    return subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False).stdout


def send(redis_server, demo_images, directory, tags):
    """Send hold(tag, 0) for each tag, alternating high_priority and default, as the app's web does:
    a Celery producer that loads the rendered config, straight to the broker."""
    items = [(tag, ("high_priority", "default")[n % 2]) for n, tag in enumerate(tags)]
    code = ("import json, sys\nfrom orderapp import app\n"
            "for tag, queue in json.loads(sys.argv[1]):\n"
            "    app.send_task('orderapp.hold', args=[tag, 0], queue=queue)\n")
    docker("run", "--rm", "--network", f"container:{redis_server.container}", "-v", f"{directory}:/orderapp:ro",
           "-w", "/orderapp", "-e", "BROKER=redis://127.0.0.1:6379/0", "-e", "PYTHONPATH=/orderapp",
           demo_images["APP_IMAGE"], "python3", "-c", code, json.dumps(items))


def runs(redis_client):
    started = [value.decode() for value in redis_client.lrange("started", 0, -1)]
    return {tag: started.count(tag) for tag in set(started)}


def cut_while_a_message_is_handed_over(redis_server, redis_client, workers, readable_tmp, demo_images, atomic_take):
    """Tasks sent, each one's runs, seconds from the heal until every task that is going to run has."""
    proxy_dir, producer_dir = readable_tmp / "proxy", readable_tmp / "producer"
    proxy_dir.mkdir(mode=0o755)
    producer_dir.mkdir(mode=0o755)
    app_dir(producer_dir)
    proxy = start_proxy(redis_server, demo_images, proxy_dir)
    try:
        workers("cut@test", ["high_priority", "default"], 7, concurrency=2, broker_port=PROXY_PORT,
                atomic_take=atomic_take)
        send(redis_server, demo_images, producer_dir, ["warm"])
        wait_until(lambda: runs(redis_client).get("warm") == 1, "the first task to run", timeout=30)
        docker("kill", "-s", "HUP", proxy)
        tags = [f"task-{n}" for n in range(TASKS)]
        send(redis_server, demo_images, producer_dir, tags)
        wait_until(lambda: "cut:" in proxy_log(proxy), "the cut to lose a reply", timeout=30)
        time.sleep(CUT_SECONDS)
        docker("kill", "-s", "USR2", proxy)
        healed = time.monotonic()
        deadline = healed + 45
        while time.monotonic() < deadline and sum(1 for tag in tags if runs(redis_client).get(tag)) < TASKS:
            time.sleep(0.2)
        back_after = time.monotonic() - healed
        time.sleep(3)  # a task run twice would show by now
        counted = runs(redis_client)
        return tags, [counted.get(tag, 0) for tag in tags], back_after
    finally:
        subprocess.run(["docker", "rm", "-f", proxy], capture_output=True, check=False)


def test_a_message_whose_delivery_the_network_lost_is_put_back_and_runs_once(
        redis_server, redis_client, workers, readable_tmp, demo_images):
    tags, counts, back_after = cut_while_a_message_is_handed_over(
        redis_server, redis_client, workers, readable_tmp, demo_images, atomic_take=True)
    print(f"{len(tags)} sent, {counts.count(1)} once, {sum(1 for c in counts if c > 1)} twice, "
          f"{counts.count(0)} lost; all run {back_after:.1f} s after the network was back")
    assert counts == [1] * TASKS
    put_back = {key.decode(): int(value) for key, value in redis_client.hgetall("priority_queue.redelivered").items()}
    assert sum(put_back.values()) == 1, put_back  # the one whose reply was lost, counted
    assert redis_client.hlen("unacked") == 0 and redis_client.hlen("priority_queue.unacked_owner") == 0
    assert back_after < 40


def test_with_kombus_fetch_the_message_whose_reply_was_lost_is_gone(
        redis_server, redis_client, workers, readable_tmp, demo_images):
    tags, counts, _back_after = cut_while_a_message_is_handed_over(
        redis_server, redis_client, workers, readable_tmp, demo_images, atomic_take=False)
    print(f"without the atomic take: {len(tags)} sent, {counts.count(1)} once, {counts.count(0)} lost")
    assert counts.count(0) == 1 and counts.count(1) == TASKS - 1
    assert redis_client.hlen("unacked") == 0 and not redis_client.lrange("default", 0, -1)
