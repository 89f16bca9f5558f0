"""A worker on several queues takes them in the topology's order: real Celery workers loading the
rendered config, on the kombu of the demo image (Debian 12: kombu 5.2.4) and of this venv.

kombu before 5.7 hands BRPOP a worker's queues in set order, random per process (kombu #801), so
every worker start below has its own hash seed, and the test that removes the backport shows the
bug is there to be fixed."""

import os
import subprocess
import sys
import time
import uuid

import pytest

from conftest import docker, run_module, wait_until
# readable_tmp and workers are fixtures, used by name.
from worker_harness import (  # noqa: F401 # pylint: disable=unused-import
    QUEUES,
    app_dir,
    control_app,
    readable_tmp,
    record_message,
    task_message,
    workers,
)

MESSAGES_PER_QUEUE = 4
# One worker start per hash seed, each on its own Redis database. Without the backport, five of
# these six (all but 3) take a queue other than high_priority first on the demo image's kombu.
SEEDS = range(1, 7)


def queue_messages(client):
    """Messages waiting on every queue before the worker starts, the last queue filled first."""
    client.flushdb()
    for queue in reversed(QUEUES):
        for _message in range(MESSAGES_PER_QUEUE):
            client.lpush(queue, record_message(queue))


WORKER_ARGS = ["-m", "celery", "-A", "orderapp", "worker", "-Q", ",".join(QUEUES), "-c", "1", "-P", "prefork",
               "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"]


def start_in_image(image, redis_container, directory, seed):
    """A worker in the demo app image, on the Redis container's network, its own database and seed."""
    name = f"pilito-order-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "--network", f"container:{redis_container}",
           "-v", f"{directory}:/orderapp:ro", "-w", "/orderapp",
           "-e", f"BROKER=redis://127.0.0.1:6379/{seed}", "-e", "PYTHONPATH=/orderapp",
           "-e", f"PYTHONHASHSEED={seed}", image, "python3", *WORKER_ARGS, "--hostname", f"order{seed}@test")
    return lambda: subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def start_in_venv(redis_server, directory, seed):
    """A worker on this venv's Celery and kombu."""
    env = {**os.environ, "BROKER": redis_server.url(seed), "PYTHONPATH": str(directory), "PYTHONHASHSEED": str(seed)}
    proc = subprocess.Popen([sys.executable, *WORKER_ARGS, "--hostname", f"order{seed}@venv"], cwd=directory,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop():
        proc.kill()
        proc.wait(timeout=30)
    return stop


def orders_seen(redis_server, demo_images, folder, where, backport=True):
    """Start one worker per seed, each with messages waiting on all its queues; return, per seed,
    the queues of the messages in the order it ran them."""
    directory = app_dir(folder, backport)
    for seed in SEEDS:
        queue_messages(redis_server.client(seed))
    stops = []
    try:
        for seed in SEEDS:
            if where == "image":
                stops.append(start_in_image(demo_images["APP_IMAGE"], redis_server.container, directory, seed))
            else:
                stops.append(start_in_venv(redis_server, directory, seed))
        total = len(QUEUES) * MESSAGES_PER_QUEUE
        wait_until(lambda: all(redis_server.client(seed).llen("started") == total for seed in SEEDS),
                   f"{len(SEEDS)} workers running {total} messages each", timeout=120)
    finally:
        for stop in stops:
            stop()
    orders = {seed: [q.decode() for q in redis_server.client(seed).lrange("started", 0, -1)] for seed in SEEDS}
    for seed in SEEDS:
        redis_server.client(seed).flushdb()
    return orders


@pytest.mark.parametrize("where", ["image", "venv"])
def test_every_start_empties_the_first_queue_before_the_next(redis_server, demo_images, readable_tmp, where):
    orders = orders_seen(redis_server, demo_images, readable_tmp, where)
    expected = [queue for queue in QUEUES for _message in range(MESSAGES_PER_QUEUE)]
    wrong = {seed: order for seed, order in orders.items() if order != expected}
    assert not wrong, f"workers took their queues out of order (seed: order run): {wrong}"


def test_without_the_backport_the_order_is_random_on_this_kombu(redis_server, demo_images, readable_tmp):
    """The bug the backport fixes is real on the demo image's kombu: the test above can fail."""
    orders = orders_seen(redis_server, demo_images, readable_tmp, "image", backport=False)
    first_taken = {seed: order[0] for seed, order in orders.items()}
    assert set(first_taken.values()) != {QUEUES[0]}, first_taken


# --- celery_queue_order, the check verify runs, against the same real workers ---------------

POOLS = {"celery_ai": ["high_priority"], "celery_worker": QUEUES}


def test_check_passes_on_workers_in_order_and_leaves_nothing(redis_server, redis_client, workers):
    workers("celery_ai@a", ["high_priority"], seed=7)
    workers("celery_worker@w1", QUEUES, seed=1)
    workers("celery_worker@w2", QUEUES, seed=2)
    result = run_module("celery_queue_order", dict(broker_url=redis_server.url(0), pools=POOLS))
    assert not result.get("failed"), result.get("msg")
    pool = result["pools"]["celery_worker"]
    assert set(pool["workers"]) == {"celery_worker@w1", "celery_worker@w2"}
    for worker in pool["workers"].values():
        assert worker == {"taken": QUEUES, "fetch_order": QUEUES, "checked_by": "fetch"}
    assert pool["held"] == ["celery_ai@a", "celery_worker@w1", "celery_worker@w2"]
    assert "celery_ai" not in result["pools"]  # one queue: no order to check
    assert all(redis_client.llen(queue) == 0 for queue in QUEUES)
    # Released: every worker takes work again at once.
    redis_client.lpush("low_priority", record_message("low_priority"))
    wait_until(lambda: redis_client.llen("started") == 1, "a message taken after the check", timeout=5)


def test_check_fails_naming_the_pool_and_the_order_seen(redis_server, workers):
    workers("celery_ai@a", ["high_priority"], seed=7)
    failures = []
    for seed in (1, 2, 4):
        name = workers(f"celery_worker@seed{seed}", QUEUES, seed=seed, backport=False)
        result = run_module("celery_queue_order", dict(broker_url=redis_server.url(0), pools=POOLS))
        docker("rm", "-f", name)
        if result.get("failed"):
            worker = result["pools"]["celery_worker"]["workers"][f"celery_worker@seed{seed}"]
            assert worker["taken"] == worker["fetch_order"] != QUEUES
            assert result["msg"] == (f"pool celery_worker: worker celery_worker@seed{seed} took "
                                     f"{', '.join(worker['taken'])}; the topology's order is "
                                     f"high_priority, default, low_priority")
            failures.append(seed)
    assert failures, "no worker without the backport took its queues out of order"


def test_work_waiting_on_an_earlier_queue_is_taken_first_and_the_check_holds(redis_server, redis_client, workers):
    """Real tasks that arrive while the check runs wait behind its probes; the worker rightly takes
    those of an earlier queue before the next queue's probe."""
    workers("celery_worker@w1", QUEUES, seed=2)
    control_app(redis_server).control.broadcast(
        "priority_queue_fetch", arguments={"mode": "hold", "seconds": 30.0}, destination=["celery_worker@w1"],
        reply=True, timeout=2)
    time.sleep(1.2)  # a fetch in flight when the hold began has ended
    for queue in ("low_priority", "default", "default", "high_priority", "high_priority"):
        redis_client.lpush(queue, record_message(queue))
    result = run_module("celery_queue_order", dict(broker_url=redis_server.url(0), pools=POOLS))
    assert not result.get("failed"), result.get("msg")
    assert result["pools"]["celery_worker"]["workers"]["celery_worker@w1"]["taken"] == QUEUES
    wait_until(lambda: redis_client.llen("started") == 5, "the real tasks run", timeout=10)
    assert [q.decode() for q in redis_client.lrange("started", 0, -1)] == [
        "high_priority", "high_priority", "default", "default", "low_priority"]


def test_busy_worker_is_checked_by_its_own_report(redis_server, redis_client, workers):
    workers("celery_worker@busy", QUEUES, seed=3, concurrency=1)
    redis_client.lpush("low_priority", task_message("low_priority", "orderapp.sleep", [20]))
    wait_until(lambda: redis_client.llen("low_priority") == 0, "the worker busy with a long task", timeout=10)
    result = run_module("celery_queue_order", dict(broker_url=redis_server.url(0), pools=POOLS))
    assert not result.get("failed"), result.get("msg")
    assert result["pools"]["celery_worker"]["workers"]["celery_worker@busy"] == {
        "taken": [], "fetch_order": QUEUES, "checked_by": "report"}
    assert "celery_worker@busy: its processes were busy" in result["_raw_output"]


def test_worker_without_the_rendered_config_is_named(redis_server, redis_client, workers):
    workers("celery_ai@plain", ["high_priority"], seed=5, config=False)
    workers("celery_worker@w1", QUEUES, seed=1)
    result = run_module("celery_queue_order", dict(broker_url=redis_server.url(0), pools=POOLS))
    assert result["failed"] is True
    assert result["msg"] == ("pool celery_worker: celery_ai@plain does not know the control command "
                             "priority_queue_fetch: it has not loaded the rendered config module celery_priority "
                             "(check the app's opt-in line and the worker's PYTHONPATH)")
    # The worker that was held is released by the check, not only by the hold running out.
    redis_client.lpush("low_priority", record_message("low_priority"))
    wait_until(lambda: redis_client.llen("started") == 1, "a message taken after the failed check", timeout=5)


def test_a_hold_nobody_ends_runs_out_by_itself(redis_server, redis_client, workers):
    workers("celery_worker@w1", QUEUES, seed=1)
    sent = time.monotonic()
    replies = control_app(redis_server).control.broadcast(
        "priority_queue_fetch", arguments={"mode": "hold", "seconds": 4.0}, destination=["celery_worker@w1"],
        reply=True, timeout=2)
    assert replies[0]["celery_worker@w1"]["held"] is True
    time.sleep(1.2)  # a fetch in flight when the hold began has ended by now
    redis_client.lpush("default", record_message("default"))
    time.sleep(0.5)
    assert time.monotonic() - sent < 4.0
    assert redis_client.llen("default") == 1, "a held worker took a message"
    wait_until(lambda: redis_client.llen("started") == 1, "the message taken once the hold ran out", timeout=6)


def test_check_mode_holds_nothing(redis_server, redis_client, workers):
    workers("celery_worker@w1", QUEUES, seed=1)
    result = run_module("celery_queue_order", dict(broker_url=redis_server.url(0), pools=POOLS), check=True)
    assert not result.get("failed"), result.get("msg")
    assert result["pools"] == {}
    assert not any(redis_client.llen(queue) for queue in QUEUES)


def test_bad_pools_are_refused_naming_the_pool(redis_server):
    result = run_module("celery_queue_order", dict(broker_url=redis_server.url(0), pools={"p": ["a", "a"]}))
    assert result["msg"] == "pools.p names a queue twice: ['a', 'a']"
    result = run_module("celery_queue_order", dict(broker_url=redis_server.url(0), pools={"p": []}))
    assert result["msg"] == "pools.p must be a non-empty list of queue names, got []"
