"""After deploy.yml on the demo host: real engine, real PostgreSQL, Redis and Celery pools."""

import json
import os
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEMO_DIR = os.environ.get("DEMO_DIR", "/srv/pilito-demo")
APP_DIR = f"{DEMO_DIR}/app"
SERVICES = ["web", "db", "redis", "celery_worker", "celery_ai", "celery_beat", "flower"]


def compose(host, *args):
    files = f"-f {APP_DIR}/docker-compose.yml -f {APP_DIR}/docker-compose.priority-queue.yml"
    return host.run(f"docker compose --project-directory {APP_DIR} {files} " + " ".join(map(shlex.quote, args)))


def psql(host, env, sql):
    out = compose(host, "exec", "-T", "db", "psql", "-U", env["POSTGRES_USER"], "-d", env["POSTGRES_DB"], "-tAc", sql)
    assert out.rc == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def env(host):
    lines = host.file(f"{APP_DIR}/.env").content_string.splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


@pytest.fixture(scope="module")
def chat_reply(host, env):
    out = host.check_output(
        "curl -fsS --max-time 60 -H 'Content-Type: application/json' -d '{\"message\": \"ping\"}' "
        f"http://127.0.0.1:{env['WEB_PORT']}/api/chat/"
    )
    return json.loads(out)


def test_every_service_runs_and_workers_are_healthy(host):
    out = compose(host, "ps", "--format", "json")
    assert out.rc == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    states = {row["Service"]: (row["State"], row.get("Health", "")) for row in rows}
    assert sorted(states) == sorted(SERVICES)
    for service, (state, health) in states.items():
        assert state == "running", service
        assert health in ("healthy", ""), (service, health)
    assert states["celery_worker"][1] == states["celery_ai"][1] == states["flower"][1] == "healthy"


def test_published_ports_listen_on_loopback_only(host, env):
    for port in (env["WEB_PORT"], 5432, 6379, 5555):
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_env_file_is_private_and_untouched_by_the_deploy(host, env):
    # Editing .env would recreate every service that reads it, the database among them.
    assert host.file(f"{APP_DIR}/.env").mode == 0o600
    assert "COMPOSE_FILE" not in env


def test_database_fix_left_no_null_and_a_default(host, env):
    assert psql(host, env, "SELECT count(*) FROM tenant_knowledge WHERE chunk_index IS NULL") == "0"
    assert psql(host, env, "SELECT column_default FROM information_schema.columns "
                           "WHERE table_name = 'tenant_knowledge' AND column_name = 'chunk_index'") == "0"


def test_backup_is_private_and_readable(host):
    dumps = host.check_output(f"ls {DEMO_DIR}/backups/*.dump").split()
    assert len(dumps) == 1  # one backup: the second, unchanged run took none
    assert host.file(dumps[0]).mode == 0o600
    assert host.file(dumps[0].replace(".dump", ".env")).mode == 0o600
    out = host.run(f"docker compose --project-directory {APP_DIR} exec -T db pg_restore --list < {dumps[0]}")
    assert "TABLE DATA public tenant_knowledge" in out.stdout


def test_pre_deploy_state_is_recorded(host):
    record = json.loads(host.file(f"{APP_DIR}/priority_queue/state/pre_deploy.json").content_string)
    assert record["queues_consumed_before"] == ["celery"]
    assert "celery_worker" in record["services_running"] and "celery_ai" not in record["services_running"]
    assert len(record["app_revision"]) == 40


def test_each_pool_consumes_exactly_its_queues(host):
    out = compose(host, "exec", "-T", "web", "celery", "-A", "core", "inspect", "active_queues", "--json",
                  "--timeout", "5")
    assert out.rc == 0, out.stdout + out.stderr
    consumed = {node.split("@")[0]: sorted(q["name"] for q in queues) for node, queues in json.loads(out.stdout).items()}
    assert consumed == {"celery_ai": ["high_priority"],
                        "celery_worker": ["default", "high_priority", "low_priority"]}


def test_chat_is_answered_by_the_ai_pool_from_high_priority(chat_reply):
    assert chat_reply["answer"] == "AI reply to: ping"
    assert chat_reply["queue"] == "high_priority"


def test_task_sent_from_web_is_recorded_as_run(host, env, chat_reply):
    row = psql(host, env, f"SELECT task_name, queue, state FROM task_run WHERE task_id = '{chat_reply['task_id']}'")
    assert row == "chat.tasks.generate_ai_reply|high_priority|SUCCESS"


def test_verify_playbook_passes_on_its_own(host):
    out = host.run(
        f"cd {ROOT} && ansible-playbook -i inventories/local playbooks/verify.yml "
        f"-e priority_queue_verify_backlog_count=20"
    )
    assert out.rc == 0, out.stdout[-3000:]
    assert "failed=0" in out.stdout


def test_bad_topology_fails_naming_the_variable_and_changes_nothing(host, tmp_path):
    rendered = [f"{APP_DIR}/docker-compose.priority-queue.yml", f"{APP_DIR}/priority_queue/celery_priority.py"]
    before = [host.file(path).sha256sum for path in rendered]
    bad = tmp_path / "bad.yml"
    bad.write_text('priority_queue_routes: {"chat.tasks.*": urgent}\n')
    out = host.run(f"cd {ROOT} && ANSIBLE_NOCOLOR=1 ansible-playbook -i inventories/local playbooks/deploy.yml -e @{bad}")
    assert out.rc != 0
    assert "priority_queue_routes['chat.tasks.*'] routes to 'urgent'" in out.stdout + out.stderr
    assert "changed=0" in out.stdout
    assert [host.file(path).sha256sum for path in rendered] == before


def test_pools_the_host_cannot_give_their_memory_fail_naming_the_variable_and_change_nothing(host, tmp_path):
    rendered = [f"{APP_DIR}/docker-compose.priority-queue.yml", f"{APP_DIR}/priority_queue/celery_priority.py"]
    before = [host.file(path).sha256sum for path in rendered]
    bad = tmp_path / "huge.yml"
    bad.write_text("priority_queue_pools:\n"
                   "  - {name: celery_ai, queues: [high_priority], concurrency: 2, memory: 4096g}\n"
                   "  - {name: celery_worker, queues: [high_priority, default, low_priority], concurrency: 4, memory: 1g}\n")
    out = host.run(f"cd {ROOT} && ANSIBLE_NOCOLOR=1 ansible-playbook -i inventories/local playbooks/deploy.yml -e @{bad}")
    assert out.rc != 0
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr).split())  # molecule forces colour
    said = re.search(r"priority_queue_pools: the pools' memory limits .*? exceed what this host can give them by (\d+) MB "
                     r"\((\d+) MB available, and (\d+) MB used by the app's workers now\)", text)
    assert said, text[-3000:]
    shortfall, available, in_use = map(int, said.groups())
    assert 0 < available < 4096 * 1024 and in_use > 0
    assert shortfall == 4096 * 1024 + 1024 - available - in_use
    assert "changed=0" in text
    assert [host.file(path).sha256sum for path in rendered] == before


def test_tasks_in_flight_during_the_deploy_each_ran_exactly_once(host, env):
    """Completion from the result backend, duplicates from the app's task_run table (the demo's
    recorder can miss a row while a worker shuts down; the result backend does not)."""
    import time

    task_ids = json.loads(host.file(f"{DEMO_DIR}/inflight_task_ids.json").content_string)
    assert len(task_ids) == 150
    deadline = time.monotonic() + 180
    while True:
        out = compose(host, "exec", "-T", "redis", "redis-cli", "-n", "1", "mget",
                      *(f"celery-task-meta-{task_id}" for task_id in task_ids))
        metas = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        succeeded = sum(meta["status"] == "SUCCESS" for meta in metas)
        if succeeded == len(task_ids) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert succeeded == len(task_ids), f"{len(task_ids) - succeeded} tasks never ran"
    ids = ",".join(f"'{task_id}'" for task_id in task_ids)
    counts = psql(host, env, f"SELECT count(*) FROM task_run WHERE task_id IN ({ids}) GROUP BY task_id")
    assert set(counts.split()) == {"1"}, "some tasks ran more than once"


def test_a_check_run_on_the_deployed_host_changes_nothing_and_leaves_no_job_files(host):
    """deploy.yml --check, as an operator runs it before a deploy. Preflight runs docker stats and the
    Celery executable check in the background (async): their result files in ~/.ansible_async go
    once read, not two more after every run."""
    job_files = "grep -l -e '\"--no-stream\"' -e '\"--version\"' ~/.ansible_async/* 2>/dev/null"
    before = set(host.run(job_files).stdout.split())
    out = host.run(f"cd {ROOT} && ANSIBLE_NOCOLOR=1 ansible-playbook -i inventories/local playbooks/deploy.yml --check")
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)  # molecule forces colour
    assert out.rc == 0 and re.search(r"demo-host\s*:.*changed=0 .*failed=0", text), text[-3000:]
    left = set(host.run(job_files).stdout.split()) - before
    assert not left, left


def test_app_is_a_git_checkout_of_a_local_bare_origin(host):
    # ansible.builtin.git writes a local-path origin back as a file:// URL; both name the same repo.
    origin = host.check_output(f"git -C {APP_DIR} remote get-url origin").removeprefix("file://")
    assert origin == f"{DEMO_DIR}/origin.git"
    assert host.file(origin).is_directory
    assert host.run(f"git -C {APP_DIR} pull --ff-only").rc == 0
