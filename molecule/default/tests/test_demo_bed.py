"""The demo host is a real system: a real engine, PostgreSQL, Redis and Celery workers."""

import json
import os
import shlex

import pytest

DEMO_DIR = os.environ.get("DEMO_DIR", "/srv/pilito-demo")
APP_DIR = f"{DEMO_DIR}/app"
SERVICES = ["web", "db", "redis", "celery_worker", "celery_beat"]


def compose(host, *args):
    return host.run(f"docker compose --project-directory {APP_DIR} " + " ".join(map(shlex.quote, args)))


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


def test_every_service_runs_and_healthchecked_ones_are_healthy(host):
    out = compose(host, "ps", "--format", "json")
    assert out.rc == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    states = {row["Service"]: (row["State"], row.get("Health", "")) for row in rows}
    assert sorted(states) == sorted(SERVICES)
    for service, (state, health) in states.items():
        assert state == "running", service
        assert health in ("healthy", ""), (service, health)
    assert states["celery_worker"][1] == "healthy"


def test_published_ports_listen_on_loopback_only(host, env):
    for port in (env["WEB_PORT"], 5432, 6379):
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_env_file_is_private(host):
    assert host.file(f"{APP_DIR}/.env").mode == 0o600


def test_db_accepts_connections_and_has_null_chunk_index_rows(host, env):
    out = compose(
        host, "exec", "-T", "db", "psql", "-U", env["POSTGRES_USER"], "-d", env["POSTGRES_DB"], "-tAc",
        "SELECT count(*) FROM tenant_knowledge WHERE chunk_index IS NULL",
    )
    assert out.rc == 0, out.stderr
    assert int(out.stdout) > 0


def test_redis_answers(host):
    out = compose(host, "exec", "-T", "redis", "redis-cli", "ping")
    assert out.stdout.strip() == "PONG"


def test_worker_answers_inspect_ping(host):
    name = compose(host, "exec", "-T", "celery_worker", "hostname").stdout.strip()
    out = compose(host, "exec", "-T", "celery_worker", "celery", "-A", "core", "inspect", "ping",
                  "--destination", f"celery_worker@{name}", "--timeout", "10")
    assert out.rc == 0, out.stdout + out.stderr
    assert "pong" in out.stdout


def test_chat_endpoint_answers_from_the_worker_on_the_default_queue(chat_reply):
    assert chat_reply["answer"] == "AI reply to: ping"
    assert chat_reply["worker"].startswith("celery_worker@")
    assert chat_reply["queue"] == "celery"
    assert chat_reply["queue_wait_seconds"] >= 0


def test_task_sent_from_web_is_recorded_as_run_on_celery_worker(host, env, chat_reply):
    out = compose(
        host, "exec", "-T", "db", "psql", "-U", env["POSTGRES_USER"], "-d", env["POSTGRES_DB"], "-tAc",
        f"SELECT task_name, worker, state FROM task_run WHERE task_id = '{chat_reply['task_id']}'",
    )
    task_name, worker, state = out.stdout.strip().split("|")
    assert task_name == "chat.tasks.generate_ai_reply"
    assert worker.startswith("celery_worker@")
    assert state == "SUCCESS"


def test_app_is_a_git_checkout_of_a_local_bare_origin(host):
    origin = host.check_output(f"git -C {APP_DIR} remote get-url origin")
    assert origin == f"{DEMO_DIR}/origin.git"
    assert host.file(origin).is_directory
    assert host.run(f"git -C {APP_DIR} pull --ff-only").rc == 0
