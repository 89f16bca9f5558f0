"""Real Celery workers for the tests: a tiny app (orderapp) in the demo app image, loading the
rendered config, on the session's Redis. Its task record(queue) notes the queue of each message it
runs, in order, in the list "started"; sleep(seconds) keeps a process busy; hold(tag, seconds) does
both, noting the tag once it has slept."""

import base64
import json
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from conftest import docker, wait_until
from rendered_config import render_celery_config
from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import probe_message

QUEUES = ["high_priority", "default", "low_priority"]

# The app: one task that records the queue of each message it runs, in the order it runs them.
ORDER_APP = """
import os
import time
from importlib import import_module

import redis
from celery import Celery

app = Celery("orderapp", broker=os.environ["BROKER"])
app.conf.update(import_module("celery_priority").settings)
started = redis.Redis.from_url(os.environ.get("RECORD_TO", os.environ["BROKER"]))


@app.task(name="orderapp.record")
def record(queue):
    started.rpush("started", queue)


@app.task(name="orderapp.sleep")
def sleep(seconds):
    time.sleep(seconds)


@app.task(name="orderapp.hold")
def hold(tag, seconds):
    time.sleep(seconds * float(os.environ.get("HOLD_SCALE", "1")))
    started.rpush("started", tag)


@app.task(name="orderapp.begin_hold")
def begin_hold(tag, seconds):
    started.rpush("began", tag)
    time.sleep(seconds)
    started.rpush("started", tag)
"""

BACKPORT_LINE = "QUEUE_ORDER_BACKPORTED = _keep_queue_order()"
FETCH_BACKPORT_LINE = "FETCH_ON_CLOSE_BACKPORTED = _read_fetch_on_close()"
REQUEUE_BACKPORT_LINE = "REQUEUE_ONCE_BACKPORTED = _requeue_once()"
TICK_BACKPORT_LINE = "TICK_AFTER_TIMERS_BACKPORTED = _tick_after_timers()"
OWNERS_LINE = "OWNERS_NOTED = _note_owners()"
ATOMIC_TAKE_LINE = "ATOMIC_TAKE = OWNERS_NOTED and _take_atomically()"
DEAD_AFTER_LINE = "DEAD_AFTER_SECONDS = 20"
HEARTBEAT_LINE = "HEARTBEAT_SECONDS = 5"
DRAINED_FOR_LINE = "DRAINED_FOR_SECONDS = 45"


@pytest.fixture
def readable_tmp():
    """A temporary folder the app image's user (uid 1000) can read, unlike pytest's tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="pilito-order-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def app_dir(directory, backport=True, fetch_backport=True, requeue_backport=True, tick_backport=True,
            visibility_timeout=3600, owners=True, dead_after=None, drained_for=None, atomic_take=True):
    """The app and the rendered config; without a backport when asked, to show the bug it fixes.
    dead_after: seconds before a silent worker's messages go back (heartbeats every fifth of it);
    drained_for: seconds before a drained worker that was not stopped consumes again."""
    config = render_celery_config(directory, visibility_timeout=visibility_timeout)
    text = config.read_text()
    assert all(line in text for line in (BACKPORT_LINE, FETCH_BACKPORT_LINE, REQUEUE_BACKPORT_LINE, TICK_BACKPORT_LINE,
                                         OWNERS_LINE, ATOMIC_TAKE_LINE, DEAD_AFTER_LINE, HEARTBEAT_LINE, DRAINED_FOR_LINE))
    if not atomic_take:
        text = text.replace(ATOMIC_TAKE_LINE, "ATOMIC_TAKE = False")
    if not owners:
        text = text.replace(OWNERS_LINE, "OWNERS_NOTED = False")
    if dead_after:
        text = text.replace(DEAD_AFTER_LINE, f"DEAD_AFTER_SECONDS = {dead_after}")
        text = text.replace(HEARTBEAT_LINE, f"HEARTBEAT_SECONDS = {max(1, dead_after // 5)}")
    if drained_for:
        text = text.replace(DRAINED_FOR_LINE, f"DRAINED_FOR_SECONDS = {drained_for}")
    if not tick_backport:
        text = text.replace(TICK_BACKPORT_LINE, "TICK_AFTER_TIMERS_BACKPORTED = False")
    if not requeue_backport:
        text = text.replace(REQUEUE_BACKPORT_LINE, "REQUEUE_ONCE_BACKPORTED = False")
    if not backport:
        text = text.replace(BACKPORT_LINE, "QUEUE_ORDER_BACKPORTED = False")
    if not fetch_backport:
        text = text.replace(FETCH_BACKPORT_LINE, "FETCH_ON_CLOSE_BACKPORTED = False")
    config.write_text(text)
    (directory / "orderapp.py").write_text(ORDER_APP)
    for path in directory.iterdir():
        path.chmod(0o644)
    return directory


def task_message(queue, task, args):
    """A real Celery message for task(*args), as kombu stores it on Redis."""
    message = probe_message(queue, str(uuid.uuid4()), str(uuid.uuid4()), ignore_result=True)
    message["headers"].update(task=task, argsrepr=repr(tuple(args)))
    message["body"] = base64.b64encode(json.dumps([args, {}, {}]).encode()).decode()
    return json.dumps(message)


def record_message(queue):
    return task_message(queue, "orderapp.record", [queue])


@pytest.fixture
def workers(redis_server, redis_client, demo_images, readable_tmp):
    """Start named workers in the demo image: start(node, queues, seed, backport=True, concurrency=2).
    env: more environment for the worker (HOLD_SCALE=0 runs hold() at once); broker_port: where it
    reaches the broker (its tasks record to the broker's own port)."""
    names = []

    def start(node, queues, seed, backport=True, concurrency=2, config=True, fetch_backport=True,
              visibility_timeout=3600, env=None, owners=True, dead_after=None, drained_for=None,
              atomic_take=True, broker_port=6379):
        directory = readable_tmp / f"{node.replace('@', '-')}-{seed}"
        directory.mkdir(mode=0o755)
        app_dir(directory, backport, fetch_backport, visibility_timeout=visibility_timeout, owners=owners,
                dead_after=dead_after, drained_for=drained_for, atomic_take=atomic_take)
        env_args = [item for key, value in (env or {}).items() for item in ("-e", f"{key}={value}")]
        if not config:
            (directory / "celery_priority.py").unlink()
            (directory / "orderapp.py").write_text(ORDER_APP.replace(
                'app.conf.update(import_module("celery_priority").settings)', ""))
        name = f"pilito-order-{uuid.uuid4().hex[:8]}"
        docker("run", "-d", "--name", name, "--network", f"container:{redis_server.container}",
               "-v", f"{directory}:/orderapp:ro", "-w", "/orderapp",
               "-e", f"BROKER=redis://127.0.0.1:{broker_port}/0", "-e", "RECORD_TO=redis://127.0.0.1:6379/0",
               "-e", "PYTHONPATH=/orderapp", "-e", f"PYTHONHASHSEED={seed}",
               *env_args, demo_images["APP_IMAGE"], "python3", "-m", "celery", "-A", "orderapp", "worker", "-Q", ",".join(queues),
               "-c", str(concurrency), "--without-gossip", "--without-mingle", "-l", "WARNING", "--hostname", node)
        names.append(name)
        wait_until(lambda: node in ping(redis_server), f"worker {node}", timeout=60)
        return name

    yield start
    for name in names:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def ping(redis_server):
    from celery import Celery

    app = Celery("ping", broker=redis_server.url(0), set_as_current=False)
    return {node for reply in app.control.ping(timeout=0.5) for node in reply}


def control_app(redis_server):
    from celery import Celery

    return Celery("test", broker=redis_server.url(0), set_as_current=False)
