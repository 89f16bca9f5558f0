"""The verifiers' failures, one line each, in build/molecule_failures/SCENARIO.txt: `make molecule`
prints that file last when a scenario fails, since CI keeps only the tail of the output. And what the
scenarios that count tasks share: where in the broker a task that never ran is, and what the broker
and the containers' logs said of it (TaskTrace)."""

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

FAILURES = (Path(__file__).resolve().parent.parent / "build" / "molecule_failures"
            / f"{os.environ.get('MOLECULE_SCENARIO_NAME', 'unknown')}.txt")


def pytest_runtest_logreport(report):
    if report.failed:
        message = report.longreprtext.strip().splitlines()
        reason = " ".join(" ".join(line[1:].split()) for line in message if line.startswith("E ")) or (
            message[-1] if message else "")
        if len(reason) > 1500:  # a playbook's output, whose end says what failed
            reason = f"{reason[:300]} [...] {reason[-1100:]}"
        FAILURES.parent.mkdir(parents=True, exist_ok=True)
        with FAILURES.open("a") as out:
            out.write(f"{report.nodeid} ({report.when}): {reason}\n")


def _where_in_the_broker(broker_url, task_ids):
    """Each task id -> the broker keys whose values mention it (waiting lists, the unacked hash)."""
    client = redis.Redis.from_url(broker_url)
    found = {task: [] for task in task_ids}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        values = client.lrange(key, 0, -1) if kind == b"list" else client.hvals(key) if kind == b"hash" else []
        for value in values:
            for task in task_ids:
                if task.encode() in value:
                    found[task].append(key.decode(errors="replace"))
    return found


@pytest.fixture
def where_in_the_broker():
    """where_in_the_broker(broker_url, task_ids), for the message of a count that found tasks missing."""
    return _where_in_the_broker


class TaskTrace:
    """What happened to each task of a run, for a count that finds one missing: the broker's commands
    that name it (Redis MONITOR: who pushed it, which worker took it, who put it back), and the
    containers' log lines that name it, from every container that ran, removed and restarted ones
    included (their whole logs in containers/). Written to `folder` as it goes; explain(ids) for a
    failure message. `engines`: the commands that reach each engine the containers run on
    (["docker"], or ["docker", "exec", host, "docker"])."""

    def __init__(self, broker_url, prefix, folder, engines):
        self.prefix, self.engines = prefix, engines
        self.pattern = re.compile(re.escape(prefix) + r"-\d+")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stopped = threading.Event()
        self.seen = {}
        self.lock = threading.Lock()
        self.followers, self.follower_threads = [], []
        threading.Thread(target=self._monitor, args=(broker_url,), daemon=True).start()
        self.lister = threading.Thread(target=self._containers, daemon=True)
        self.lister.start()

    def _note(self, line):
        with self.lock:
            for task in set(self.pattern.findall(line)):
                self.seen.setdefault(task, []).append(line)

    def _monitor(self, broker_url):
        with (self.folder / "broker.log").open("a") as out:
            while not self.stopped.is_set():
                try:
                    with redis.Redis.from_url(broker_url, socket_timeout=5).monitor() as monitor:
                        for command in monitor.listen():
                            text = command["command"]
                            words = text.split(" ", 2) + ["", ""]
                            task = self.pattern.search(text)
                            # The message's own path: not the result backend's reads and writes.
                            if task and not words[1].startswith("celery-task-meta-"):
                                line = f"{command['time']:.3f} {command['client_address']} {words[0]} {words[1]} {task.group()}"
                                out.write(line + "\n")
                                self._note(line)
                            if self.stopped.is_set():
                                return
                except Exception:  # noqa: BLE001 (the broker restarts; MONITOR again)
                    time.sleep(0.3)

    def _containers(self):
        followed = set()
        while not self.stopped.is_set():
            for engine in self.engines:
                listed = subprocess.run([*engine, "ps", "-aq"], capture_output=True, text=True, check=False)
                for container in set(listed.stdout.split()) - followed:
                    followed.add(container)
                    thread = threading.Thread(target=self._follow, args=(engine, container), daemon=True)
                    thread.start()
                    self.follower_threads.append(thread)
            self.stopped.wait(1.0)

    def _follow(self, engine, container):
        """Every log line of the container to containers/<id>.log (a warning that names no task
        can be the one that explains it); the lines that name a task to its trace. `docker logs -f`
        ends when the container stops: a restarted one is followed again from its last line."""
        (self.folder / "containers").mkdir(exist_ok=True)
        last = ""
        with (self.folder / "containers" / f"{container}.log").open("a") as out:
            while not self.stopped.is_set():
                since = ["--since", last] if last else []
                with subprocess.Popen([*engine, "logs", "-f", "-t", *since, container], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, errors="replace") as follower:
                    self.followers.append(follower)
                    for line in follower.stdout:
                        stamp = line.split(" ", 1)[0]
                        if last and stamp <= last:
                            continue  # --since repeats the last line
                        last = stamp if stamp[:2].isdigit() else last
                        out.write(line)
                        if self.prefix in line:
                            self._note(f"{container} {line.strip()[:300]}")
                out.flush()
                while not self.stopped.wait(1.0):
                    state = subprocess.run([*engine, "inspect", "-f", "{{.State.Running}}", container],
                                           capture_output=True, text=True, check=False)
                    if state.returncode != 0:
                        return  # removed
                    if state.stdout.strip() == "true":
                        break  # started again

    def stop(self):
        self.stopped.set()
        self.lister.join(timeout=30)  # no follower starts after this
        for follower in self.followers:
            follower.terminate()
        for thread in self.follower_threads:
            thread.join(timeout=5)  # their files written out
        with self.lock, (self.folder / "tasks.log").open("w") as out:
            for task, lines in sorted(self.seen.items()):
                out.write(f"{task}\n" + "".join(f"  {line}\n" for line in lines))

    def explain(self, tasks):
        with self.lock:
            return {task: [line[:200] for line in self.seen.get(task, ["(no broker command or log line named it)"])][-12:]
                    for task in tasks}
