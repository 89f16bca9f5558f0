"""After the rollback sequence under load (converge): every task ran exactly once, each plan did its
work and nothing on a rerun, and no message waits on a queue without a consumer. The last test does
the runbook's own plan B by hand to show that without the move messages are stranded."""

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEMO_DIR = os.environ.get("DEMO_DIR", "/srv/pilito-demo")
APP_DIR = f"{DEMO_DIR}/app"
INVENTORY = ROOT / "inventories/local"
QUEUES = ["high_priority", "default", "low_priority", "celery"]


def compose(host, *args):
    """The app's own compose file: db and redis are there, deployed or rolled back."""
    return host.run(f"docker compose --project-directory {APP_DIR} -f {APP_DIR}/docker-compose.yml "
                    + " ".join(map(shlex.quote, args)))


@pytest.fixture(scope="module")
def report():
    return json.loads(Path(f"{DEMO_DIR}/rollback_report.json").read_text())


@pytest.fixture(scope="module")
def env(host):
    lines = host.file(f"{APP_DIR}/.env").content_string.splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def runs(host, env, ids):
    """Rows in the app's task_run table per task id (one row per finished run)."""
    sql = "SELECT task_id, count(*) FROM task_run WHERE task_id LIKE '{}%' GROUP BY task_id".format(
        ids[0].split("-")[0])
    out = compose(host, "exec", "-T", "db", "psql", "-U", env["POSTGRES_USER"], "-d", env["POSTGRES_DB"],
                  "-tAF", ",", "-c", sql)
    assert out.rc == 0, out.stderr
    counted = dict(line.split(",") for line in out.stdout.split())
    return {task_id: int(counted.get(task_id, 0)) for task_id in ids}


def llen(host, key):
    out = compose(host, "exec", "-T", "redis", "redis-cli", "llen", key)
    assert out.rc == 0, out.stderr
    return int(out.stdout)


def queue_lengths(host):
    """Waiting messages per queue, priority sub-lists included."""
    return {queue: sum(llen(host, key) for key in [queue] + [f"{queue}\x06\x16{step}" for step in (3, 6, 9)])
            for queue in QUEUES}


def send_pages(env, prefix, count):
    import urllib.request

    for n in range(count):
        body = json.dumps({"name": "crawler.tasks.process_page_content", "args": [n], "task_id": f"{prefix}-{n}"})
        request = urllib.request.Request(f"http://127.0.0.1:{env['WEB_PORT']}/api/tasks/", body.encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["task_id"] == f"{prefix}-{n}"
    return [f"{prefix}-{n}" for n in range(count)]


def playbook(name, *args):
    return subprocess.run(["ansible-playbook", "-i", str(INVENTORY), str(ROOT / "playbooks" / name), *args],
                          capture_output=True, text=True, timeout=900, check=False)


def wait_for_runs(host, env, ids, timeout=240):
    deadline = time.monotonic() + timeout
    while True:
        counts = runs(host, env, ids)
        if all(counts.values()) or time.monotonic() > deadline:
            return counts
        time.sleep(2)


def test_the_producer_sent_across_all_three_queues(report):
    assert report["producer"]["sent"] >= 400
    assert set(report["producer"]["routed_to"]) == {"high_priority", "default", "low_priority", "celery"}
    assert report["producer"]["unsent"] == []


def test_every_task_ran_exactly_once(host, env, report):
    counts = wait_for_runs(host, env, report["expected_ids"])
    missing = [task_id for task_id, count in counts.items() if count == 0]
    twice = {task_id: count for task_id, count in counts.items() if count > 1}
    assert not missing, f"{len(missing)} of {len(counts)} tasks never ran: {missing[:10]}"
    assert not twice, f"tasks that ran more than once: {twice}"


def test_each_plan_changed_the_host_and_a_rerun_changes_nothing(report):
    steps = [(step["step"], step["changed"]) for step in report["steps"]]
    assert steps[1][0] == steps[2][0] == "plan_a" and steps[1][1] > 0 and steps[2][1] == 0
    assert steps[4][0] == steps[5][0] == "plan_b" and steps[4][1] > 0 and steps[5][1] == 0
    assert [name for name, _changed in steps[7:]] == ["plan_c", "plan_c_full"]


def test_plan_b_moved_what_would_have_been_stranded(report):
    assert report["backlog_before_plan_b"] > 0
    assert sum(report["moved_by_plan_b"].values()) > 0, report["moved_by_plan_b"]


def test_plan_b_stops_the_pools_before_it_checks_the_old_code_out(report):
    """Workers must not see their code, or the compose file their service extends, change under them."""
    order = report["plan_b_order"]
    assert order["pools_stopped_ns"], "plan B stopped no pool"
    assert max(order["pools_stopped_ns"]) < order["code_checked_out_ns"], order


def test_plan_c_full_put_back_what_it_saved(report):
    saved, restored = report["plan_c_full_messages"]["saved"], report["plan_c_full_messages"]["restored"]
    assert saved is not None and restored == saved


def test_after_the_sequence_the_topology_verifies_and_nothing_waits_unconsumed(host):
    result = playbook("verify.yml")
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_runbooks_plan_b_strands_messages_and_rollback_plan_b_rescues_them(host, env):
    """The runbook's plan B (git revert, compose up with the app's file alone, celery_ai removed) leaves
    low_priority without a consumer; its messages wait for ever. rollback.yml --tags plan_b moves them."""
    ids = send_pages(env, f"strand{int(time.time())}", 300)
    out = compose(host, "up", "--detach", "--wait", "--remove-orphans")
    assert out.rc == 0, out.stderr
    stranded = queue_lengths(host)["low_priority"]
    time.sleep(5)
    assert stranded > 0, "the backlog drained before the runbook's plan B; queue more pages"
    assert queue_lengths(host)["low_priority"] == stranded, "something still consumes low_priority"

    result = playbook("rollback.yml", "--tags", "plan_b")
    assert result.returncode == 0, result.stdout[-3000:]
    assert queue_lengths(host)["low_priority"] == 0
    counts = wait_for_runs(host, env, ids)
    assert [task_id for task_id, count in counts.items() if count != 1] == []
