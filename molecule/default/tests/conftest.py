"""What the default scenario's tests share: the demo app's .env, its compose project, the collection's
playbooks run against the demo inventory, and the count of the app's tasks in its task_run table."""

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DEMO_DIR = os.environ.get("DEMO_DIR", "/srv/pilito-demo")
APP_DIR = f"{DEMO_DIR}/app"


def dotenv():
    lines = Path(f"{APP_DIR}/.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def playbook(name, *args):
    """Runs one of the collection's playbooks; returns (rc, whole output, changed count)."""
    out = subprocess.run(["ansible-playbook", "-i", str(ROOT / "inventories/local"), str(ROOT / "playbooks" / name),
                          *args], capture_output=True, text=True, timeout=900, check=False,
                         env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    changed = re.search(r"demo-host\s*:.*?changed=(\d+)", out.stdout)
    return out.returncode, out.stdout + out.stderr, int(changed.group(1)) if changed else None


def compose(*args, files=("docker-compose.yml", "docker-compose.priority-queue.yml")):
    """docker compose on the demo project with the deployed files."""
    argv = ["docker", "compose", "--project-directory", APP_DIR]
    for name in files:
        argv += ["-f", f"{APP_DIR}/{name}"]
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=600, check=False)


def celery(*args):
    """celery -A core ... in the web container; fails the test when it fails."""
    out = compose("exec", "-T", "web", "celery", "-A", "core", *args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def post(path, body, timeout=60):
    request = urllib.request.Request(f"http://127.0.0.1:{dotenv()['WEB_PORT']}{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def send_pages(prefix, count):
    """Sends count process_page_content tasks (low_priority) through web, with ids of this prefix."""
    for n in range(count):
        assert post("/api/tasks/", {"name": "crawler.tasks.process_page_content", "args": [n],
                                    "task_id": f"{prefix}-{n}"})["task_id"] == f"{prefix}-{n}"
    return [f"{prefix}-{n}" for n in range(count)]


def runs_other_than_once(ids, timeout=240):
    """Waits until every task has a row in the app's task_run table; returns {id: runs} of those that
    ran other than exactly once."""
    env = dotenv()
    sql = f"SELECT task_id, count(*) FROM task_run WHERE task_id LIKE '{ids[0].rsplit('-', 1)[0]}-%' GROUP BY task_id"
    deadline = time.monotonic() + timeout
    while True:
        out = compose("exec", "-T", "db", "psql", "-U", env["POSTGRES_USER"], "-d", env["POSTGRES_DB"],
                      "-tAF", ",", "-c", sql)
        assert out.returncode == 0, out.stderr
        counted = {task_id: int(count) for task_id, count in (line.split(",") for line in out.stdout.split())}
        if all(task_id in counted for task_id in ids) or time.monotonic() > deadline:
            return {task_id: counted.get(task_id, 0) for task_id in ids if counted.get(task_id, 0) != 1}
        time.sleep(2)


def container(service):
    """The demo project's (first) container of a service."""
    return f"pilito-demo-{service}-1"
