"""A worker killed mid-task (SIGKILL: the OOM killer, a crash) leaves the message it ran in kombu's
unacked hash, which kombu gives back only after the visibility timeout (an hour). The rendered
config has every worker note what it holds and say that it lives; a live worker puts back what a
silent one held, once, at the head of its queue. Real workers in the demo image, real Redis; the
dead-worker window is shortened to DEAD_AFTER seconds so the tests are quick."""

import json
import time

from conftest import docker, run_module, wait_until
# readable_tmp and workers are fixtures, used by name.
from worker_harness import (  # noqa: F401 # pylint: disable=unused-import
    control_app,
    readable_tmp,
    task_message,
    workers,
)

DEAD_AFTER = 6
HEARTBEAT = 1
DRAINED_FOR = 8
# The worker is the container's PID 1; its pool processes are its children.
KILL_POOL_PROCESSES = """
import os, signal
for pid in filter(str.isdigit, os.listdir("/proc")):
    if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1] == "1":
        os.kill(int(pid), signal.SIGKILL)
"""


def began(redis_client, tag):
    return [value.decode() for value in redis_client.lrange("began", 0, -1)].count(tag)


def finished(redis_client, tag):
    return [value.decode() for value in redis_client.lrange("started", 0, -1)].count(tag)


def send_hold(redis_client, queue, tag, seconds):
    redis_client.lpush(queue, task_message(queue, "orderapp.begin_hold", [tag, seconds]))


def test_a_killed_workers_task_is_back_on_its_queue_in_seconds_and_runs_again(redis_server, redis_client, workers):
    victim = workers("victim@test", ["default"], 1, concurrency=1, dead_after=DEAD_AFTER)
    workers("survivor@test", ["high_priority"], 2, concurrency=1, dead_after=DEAD_AFTER)
    send_hold(redis_client, "default", "killed", 2)
    wait_until(lambda: began(redis_client, "killed") == 1, "the task to start", timeout=30)
    assert json.loads(redis_client.hvals("unacked")[0])[2] == "default"
    docker("kill", "-s", "KILL", victim)
    killed = time.monotonic()
    # Back on its queue (no worker consumes default now), out of the unacked hash, counted once.
    wait_until(lambda: redis_client.llen("default") == 1, "the message back on default", timeout=DEAD_AFTER + 20)
    back_after = time.monotonic() - killed
    assert redis_client.hlen("unacked") == 0
    assert redis_client.hget("priority_queue.redelivered", "default") == b"1"
    checked = run_module("celery_queue_check", dict(broker_url=redis_server.url(0), queues=["default"],
                                                    consumers=False))
    assert checked["queues"]["default"]["redelivered"] == 1, checked  # what the queue check reports
    assert redis_client.hlen("priority_queue.unacked_owner") == 0
    message = json.loads(redis_client.lindex("default", -1))
    assert message["headers"]["redelivered"] is True
    print(f"back on its queue {back_after:.1f} s after the kill")
    assert back_after <= DEAD_AFTER + 3 * HEARTBEAT + 3
    # The container comes back (a restart policy would start it): the task runs again, to its end.
    docker("start", victim)
    wait_until(lambda: finished(redis_client, "killed") == 1, "the task to run again", timeout=60)
    assert began(redis_client, "killed") == 2
    time.sleep(DEAD_AFTER + 2 * HEARTBEAT)
    assert finished(redis_client, "killed") == 1 and redis_client.llen("default") == 0


def test_without_the_owner_notes_a_killed_workers_task_waits_for_the_visibility_timeout(redis_client, workers):
    victim = workers("victim@test", ["default"], 3, concurrency=1, owners=False, dead_after=DEAD_AFTER)
    workers("survivor@test", ["high_priority"], 4, concurrency=1, owners=False, dead_after=DEAD_AFTER)
    send_hold(redis_client, "default", "stranded", 2)
    wait_until(lambda: began(redis_client, "stranded") == 1, "the task to start", timeout=30)
    docker("kill", "-s", "KILL", victim)
    time.sleep(DEAD_AFTER + 3 * HEARTBEAT + 3)
    assert redis_client.llen("default") == 0
    assert redis_client.hlen("unacked") == 1


def test_a_live_worker_running_a_task_longer_than_the_window_keeps_it(redis_client, workers):
    workers("busy@test", ["default"], 5, concurrency=1, dead_after=DEAD_AFTER)
    workers("other@test", ["high_priority"], 6, concurrency=1, dead_after=DEAD_AFTER)
    send_hold(redis_client, "default", "long", 3 * DEAD_AFTER)
    wait_until(lambda: finished(redis_client, "long") == 1, "the long task", timeout=3 * DEAD_AFTER + 30)
    assert began(redis_client, "long") == 1
    assert redis_client.hget("priority_queue.redelivered", "default") is None
    assert redis_client.hlen("unacked") == 0 and redis_client.hlen("priority_queue.unacked_owner") == 0


def test_a_worker_in_its_warm_shutdown_keeps_its_running_task(redis_client, workers):
    """A worker stopping warm answers no remote control while its tasks finish, yet still says that
    it lives: its task is not put back and runs once."""
    stopping = workers("stopping@test", ["default"], 7, concurrency=1, dead_after=DEAD_AFTER)
    workers("other@test", ["high_priority"], 8, concurrency=1, dead_after=DEAD_AFTER)
    send_hold(redis_client, "default", "finishing", 2 * DEAD_AFTER + 4)
    wait_until(lambda: began(redis_client, "finishing") == 1, "the task to start", timeout=30)
    # Old enough to be judged before the stop: only the worker's word keeps it.
    time.sleep(DEAD_AFTER + 1)
    docker("kill", "-s", "TERM", stopping)
    docker("wait", stopping)
    assert finished(redis_client, "finishing") == 1
    time.sleep(2 * HEARTBEAT)
    assert began(redis_client, "finishing") == 1
    assert redis_client.llen("default") == 0 and redis_client.hlen("unacked") == 0
    assert redis_client.hget("priority_queue.redelivered", "default") is None


def test_a_worker_process_killed_mid_task_gives_its_message_back(redis_client, workers):
    """The OOM killer takes one pool process, not the worker: the message goes back to the queue
    (task_reject_on_worker_lost) instead of being acknowledged as failed, and the task runs again."""
    worker = workers("pool@test", ["default"], 9, concurrency=1, dead_after=DEAD_AFTER)
    send_hold(redis_client, "default", "oom", 3)
    wait_until(lambda: began(redis_client, "oom") == 1, "the task to start", timeout=30)
    docker("exec", worker, "python3", "-c", KILL_POOL_PROCESSES)
    wait_until(lambda: finished(redis_client, "oom") == 1, "the task to run again", timeout=60)
    assert began(redis_client, "oom") == 2


def test_a_task_that_kills_its_process_twice_fails_instead_of_looping(redis_client, workers):
    """Put back once, then acknowledged as failed: a task that needs more memory than its pool has
    does not kill a process after another forever."""
    worker = workers("poison@test", ["default"], 10, concurrency=1, dead_after=DEAD_AFTER)
    send_hold(redis_client, "default", "poison", 30)
    for run in (1, 2):
        wait_until(lambda: began(redis_client, "poison") == run, f"run {run} to start", timeout=60)
        docker("exec", worker, "python3", "-c", KILL_POOL_PROCESSES)
    wait_until(lambda: redis_client.hlen("unacked") == 0, "the message acknowledged", timeout=30)
    time.sleep(3)
    assert began(redis_client, "poison") == 2 and finished(redis_client, "poison") == 0
    assert redis_client.llen("default") == 0


def active_queues(redis_server, node):
    with control_app(redis_server).connection_for_write() as connection:
        replies = control_app(redis_server).control.inspect([node], timeout=2, connection=connection).active_queues()
    return [queue["name"] for queue in (replies or {}).get(node, [])]


def test_a_drained_worker_whose_deploy_died_consumes_again(redis_server, redis_client, workers):
    """The controller killed between the drain and the stop: the worker takes its queues back, in
    their order, DRAINED_FOR seconds later; one drained and then stopped warm just stops."""
    workers("left@left-host", ["high_priority", "default"], 5, concurrency=1, drained_for=DRAINED_FOR, dead_after=DEAD_AFTER)
    stopped = workers("stopped@stopped-host", ["default"], 6, concurrency=1, drained_for=DRAINED_FOR, dead_after=DEAD_AFTER)
    drained_result = run_module("celery_worker_drain", dict(broker_url=redis_server.url(0), hostnames=["left-host", "stopped-host"]))
    assert set(drained_result.get("drained", {})) == {"left@left-host", "stopped@stopped-host"}, drained_result
    assert active_queues(redis_server, "left@left-host") == []
    drained = time.monotonic()
    docker("kill", "-s", "TERM", stopped)  # the deploy stops this one in time
    send_hold(redis_client, "default", "after the drain", 0)
    time.sleep(DRAINED_FOR / 2)
    assert active_queues(redis_server, "left@left-host") == [] and began(redis_client, "after the drain") == 0
    wait_until(lambda: active_queues(redis_server, "left@left-host") == ["high_priority", "default"],
               "the drained worker to consume again", timeout=DRAINED_FOR + 3 * HEARTBEAT + 10)
    back_after = time.monotonic() - drained
    wait_until(lambda: finished(redis_client, "after the drain") == 1, "the task sent after the drain", timeout=30)
    print(f"consuming again {back_after:.1f} s after the drain")
    assert back_after <= DRAINED_FOR + 3 * HEARTBEAT + 5
    assert docker("inspect", "-f", "{{.State.Running}}", stopped).strip() == "false"


def test_with_no_worker_left_the_queue_check_puts_back_what_the_dead_one_held(redis_server, redis_client, workers):
    """Every worker dead (the topology's only pool killed, its restart failing): nothing puts its
    task back but the scheduled queue check."""
    victim = workers("alone@test", ["default"], 5, concurrency=1, dead_after=DEAD_AFTER)
    send_hold(redis_client, "default", "orphaned", 30)
    wait_until(lambda: began(redis_client, "orphaned") == 1, "the task to start", timeout=30)
    docker("kill", "-s", "KILL", victim)
    args = dict(broker_url=redis_server.url(0), queues=["default"], consumers=False, dead_after_seconds=DEAD_AFTER)
    assert run_module("celery_queue_check", args)["put_back"] == {}  # silent for less than the window yet
    time.sleep(DEAD_AFTER + 1)
    wait_until(lambda: int(redis_client.info("server")["uptime_in_seconds"]) >= 2 * DEAD_AFTER, "the broker's uptime",
               timeout=3 * DEAD_AFTER)
    checked = run_module("celery_queue_check", args, check=True)
    assert checked["put_back"] == {"default": 1} and checked["changed"] is True
    assert redis_client.hlen("unacked") == 1 and redis_client.llen("default") == 0  # check mode: nothing moved
    checked = run_module("celery_queue_check", {**args, "thresholds": {}})
    assert checked["put_back"] == {"default": 1} and checked["changed"] is True, checked
    assert checked["queues"]["default"]["redelivered"] == 1 and checked["queues"]["default"]["waiting"] == 1
    assert redis_client.hlen("unacked") == 0 and redis_client.hlen("priority_queue.unacked_owner") == 0
    assert json.loads(redis_client.lindex("default", -1))["headers"]["redelivered"] is True
    again = run_module("celery_queue_check", args)
    assert again["put_back"] == {} and again["changed"] is False
    # A worker started again runs it to its end, once.
    docker("start", victim)
    wait_until(lambda: finished(redis_client, "orphaned") == 1, "the task to run again", timeout=60)


def test_the_queue_check_leaves_what_a_live_worker_holds(redis_server, redis_client, workers):
    workers("busy@test", ["default"], 6, concurrency=1, dead_after=DEAD_AFTER)
    send_hold(redis_client, "default", "kept", DEAD_AFTER + 15)
    wait_until(lambda: began(redis_client, "kept") == 1, "the task to start", timeout=30)
    time.sleep(DEAD_AFTER + 1)  # held longer than the window, by a worker that is heard
    wait_until(lambda: int(redis_client.info("server")["uptime_in_seconds"]) >= 2 * DEAD_AFTER, "the broker's uptime",
               timeout=3 * DEAD_AFTER)
    checked = run_module("celery_queue_check", dict(broker_url=redis_server.url(0), queues=["default"], consumers=False,
                                                    dead_after_seconds=DEAD_AFTER))
    assert checked["put_back"] == {} and redis_client.hlen("unacked") == 1
    wait_until(lambda: finished(redis_client, "kept") == 1, "the task to finish", timeout=30)
    assert began(redis_client, "kept") == 1
