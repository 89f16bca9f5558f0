"""The rollback plans on the deployed demo host, after the other files' tests (pytest runs this
file last): a release pushed while an unchanged deploy runs waits for the next deploy; plan C restarts
one pool at a time; a rerun of plan A or plan B changes nothing; the
runbook's own plan B strands the page backlog and rollback.yml --tags plan_b moves it to a consumed
queue; plan B stops the pools before it checks the old code out. Under a producer's load the plans
are counted in the plain and multihost scenarios."""

import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
from rollback_bench import ContainerEvents, push_release, stops  # noqa: E402 # pylint: disable=wrong-import-position

DEMO_DIR = os.environ.get("DEMO_DIR", "/srv/pilito-demo")
APP_DIR = f"{DEMO_DIR}/app"
QUEUES = ["high_priority", "default", "low_priority", "celery"]


def app_compose(host, *args):
    """The app's own compose file: db and redis are there, deployed or rolled back."""
    return host.run(f"docker compose --project-directory {APP_DIR} -f {APP_DIR}/docker-compose.yml "
                    + " ".join(map(shlex.quote, args)))


def dotenv(host):
    lines = host.file(f"{APP_DIR}/.env").content_string.splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def playbook(name, *args):
    """Runs one of the collection's playbooks; returns (rc, the end of its output, the number of changed
    tasks). Failures are in stderr: Molecule's ansible.cfg sets display_failed_stderr."""
    out = subprocess.run(["ansible-playbook", "-i", str(ROOT / "inventories/local"), str(ROOT / "playbooks" / name),
                          *args], capture_output=True, text=True, timeout=900, check=False,
                         env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    changed = re.search(r"demo-host\s*:.*?changed=(\d+)", out.stdout)
    return out.returncode, out.stdout[-3000:] + out.stderr[-3000:], int(changed.group(1)) if changed else None


def queue_lengths(host):
    """Waiting messages per queue, priority sub-lists included."""
    def llen(key):
        out = app_compose(host, "exec", "-T", "redis", "redis-cli", "llen", key)
        assert out.rc == 0, out.stderr
        return int(out.stdout)

    return {queue: sum(llen(key) for key in [queue] + [f"{queue}\x06\x16{step}" for step in (3, 6, 9)])
            for queue in QUEUES}


def send_pages(env, prefix, count):
    for n in range(count):
        body = json.dumps({"name": "crawler.tasks.process_page_content", "args": [n], "task_id": f"{prefix}-{n}"})
        request = urllib.request.Request(f"http://127.0.0.1:{env['WEB_PORT']}/api/tasks/", body.encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["task_id"] == f"{prefix}-{n}"
    return [f"{prefix}-{n}" for n in range(count)]


def runs_once_each(host, env, ids, timeout=240):
    """Waits until every task has a row in the app's task_run table; returns the ids that ran other
    than exactly once."""
    sql = f"SELECT task_id, count(*) FROM task_run WHERE task_id LIKE '{ids[0].split('-')[0]}-%' GROUP BY task_id"
    deadline = time.monotonic() + timeout
    while True:
        out = app_compose(host, "exec", "-T", "db", "psql", "-U", env["POSTGRES_USER"], "-d", env["POSTGRES_DB"],
                          "-tAF", ",", "-c", sql)
        assert out.rc == 0, out.stderr
        counted = {task_id: int(count) for task_id, count in (line.split(",") for line in out.stdout.split())}
        if all(task_id in counted for task_id in ids) or time.monotonic() > deadline:
            return {task_id: counted.get(task_id, 0) for task_id in ids if counted.get(task_id, 0) != 1}
        time.sleep(2)


def ready_ns(host, service, since_ns):
    """When each of a service's containers said it was ready (Celery's "ready." line) since then."""
    names = host.run(f"docker ps --format '{{{{.Names}}}}' --filter label=com.docker.compose.service={service}")
    times = []
    for name in names.stdout.split():
        out = host.run(f"docker logs --timestamps --since {since_ns / 1e9:.6f} {name}")
        ready = [line.split()[0] for line in (out.stdout + out.stderr).splitlines() if line.endswith(" ready.")]
        times += [int(datetime.datetime.fromisoformat(stamp[:26] + "+00:00").timestamp() * 1e9) for stamp in ready]
    return times


def test_a_release_pushed_while_an_unchanged_deploy_runs_is_left_for_the_next_deploy(host):
    """preflight found nothing to change, so the deploy takes no backup and renders nothing: a release
    landing on the branch meanwhile must not be pulled behind their back (plan B's test deploys it)."""
    before = host.check_output(f"git -C {APP_DIR} rev-parse HEAD")
    run = subprocess.Popen(["ansible-playbook", "-i", str(ROOT / "inventories/local"), str(ROOT / "playbooks/deploy.yml")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    lines, pushed = [], False
    for line in run.stdout:
        lines.append(line)
        if not pushed and "Note whether the deploy changes anything" in line:
            push_release(APP_DIR)  # preflight is over; the code update comes later in the run
            pushed = True
    out = "".join(lines)
    changed = re.search(r"demo-host\s*:.*?changed=(\d+)", out)
    assert run.wait(timeout=900) == 0 and pushed, out[-3000:]
    assert changed and int(changed.group(1)) == 0, out[-3000:]
    assert host.check_output(f"git -C {APP_DIR} rev-parse HEAD") == before
    assert host.check_output(f"git -C {APP_DIR} ls-remote origin main").split()[0] != before


def test_plan_c_restarts_the_pools_one_at_a_time_so_high_priority_keeps_a_consumer(host):
    """celery_ai and celery_worker both consume high_priority: restarted together, the AI task waits
    seconds with nothing to take it. The second pool stops only once the first one's replicas say ready."""
    events = ContainerEvents()
    started = time.time_ns()
    rc, out, changed = playbook("rollback.yml", "--tags", "plan_c")
    seen = events.stop()
    assert rc == 0 and changed, out
    died = {service: stops(seen, (service,)) for service in ("celery_ai", "celery_worker")}
    assert all(died.values()), f"plan C restarted not every pool: {seen}"
    first, second = sorted(died, key=lambda service: min(died[service]))
    ready = ready_ns(host, first, started)
    assert len(ready) == len(died[first]), f"{first}: {len(died[first])} stopped, {len(ready)} said ready"
    assert max(ready) < min(died[second]), f"{second} stopped before {first} was ready again: {seen}, {ready}"


def test_a_tag_that_names_no_plan_is_refused_and_changes_nothing(host):
    before = host.run("docker ps -q --no-trunc").stdout.split()
    rc, out, _changed = playbook("rollback.yml", "--tags", "plan_x")
    assert rc != 0, out
    assert "rollback.yml --tags plan_x names no plan: give one of plan_a, plan_b, plan_c, plan_c_full" in out, out
    assert host.run("docker ps -q --no-trunc").stdout.split() == before


def test_plan_a_stops_the_ai_pool_and_a_rerun_changes_nothing(host):
    rc, out, changed = playbook("rollback.yml", "--tags", "plan_a")
    assert rc == 0 and changed, out
    assert not host.run("docker ps -q --filter label=com.docker.compose.service=celery_ai").stdout.strip()
    rc, out, changed = playbook("rollback.yml", "--tags", "plan_a")
    assert rc == 0 and changed == 0, out


def test_the_runbooks_plan_b_strands_messages_and_rollback_plan_b_rescues_them(host):
    """The runbook's plan B (compose up with the app's file alone, celery_ai removed) leaves
    low_priority without a consumer; its messages wait for ever. rollback.yml --tags plan_b moves
    them, and a rerun changes nothing."""
    env = dotenv(host)
    ids = send_pages(env, f"strand{int(time.time())}", 300)
    out = app_compose(host, "up", "--detach", "--wait", "--remove-orphans")
    assert out.rc == 0, out.stderr
    stranded = queue_lengths(host)["low_priority"]
    time.sleep(5)
    assert stranded > 0, "the backlog drained before the runbook's plan B; queue more pages"
    assert queue_lengths(host)["low_priority"] == stranded, "something still consumes low_priority"

    rc, out, changed = playbook("rollback.yml", "--tags", "plan_b")
    assert rc == 0 and changed, out
    assert queue_lengths(host)["low_priority"] == 0
    # Flower went with the rendered services, and its settings (its password) with it.
    assert not host.run("docker ps -aq --filter label=com.docker.compose.service=flower").stdout.strip()
    assert not host.file(f"{APP_DIR}/priority_queue/flower").exists
    assert runs_once_each(host, env, ids) == {}
    rc, out, changed = playbook("rollback.yml", "--tags", "plan_b")
    assert rc == 0 and changed == 0, out


def test_plan_b_stops_the_pools_before_it_checks_the_old_code_out(host):
    """Workers must not see their code, or the compose file their service extends, change under
    them. A release after the first deploy makes plan B's checkout rewrite .gitignore."""
    push_release(APP_DIR)
    rc, out, _changed = playbook("deploy.yml")
    assert rc == 0, out
    events = ContainerEvents()
    rc, out, _changed = playbook("rollback.yml", "--tags", "plan_b")
    stopped = stops(events.stop())
    assert rc == 0, out
    assert stopped, "plan B stopped no pool"
    assert max(stopped) < os.stat(f"{APP_DIR}/.gitignore").st_mtime_ns
