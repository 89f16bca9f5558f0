"""The renamed app after deploy.yml: the same guarantees, reached through inventory variables only."""

import json
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
APP_DIR = "/srv/pilito-renamed/app"


def compose(host, *args):
    files = f"-f {APP_DIR}/compose.production.yml -f {APP_DIR}/docker-compose.priority-queue.yml"
    return host.run(f"docker compose --project-directory {APP_DIR} {files} " + " ".join(map(shlex.quote, args)))


def test_each_renamed_pool_consumes_exactly_its_queues(host):
    out = compose(host, "exec", "-T", "frontend", "celery", "-A", "saas", "inspect", "active_queues", "--json",
                  "--timeout", "5")
    assert out.rc == 0, out.stdout + out.stderr
    replies = json.loads(out.stdout)
    consumed = {node.split("@")[0]: sorted(q["name"] for q in queues) for node, queues in replies.items()}
    assert consumed == {"assistant_pool": ["interactive"], "worker": ["batch", "bulk", "interactive"]}
    # scale phase 2 of this inventory: two assistant_pool replicas, each its own node
    assert sorted(node.split("@")[0] for node in replies) == ["assistant_pool", "assistant_pool", "worker"]


def test_chat_is_routed_by_its_renamed_task_to_the_interactive_queue(host):
    reply = json.loads(host.check_output(
        "curl -fsS --max-time 60 -d '{\"message\": \"renamed\"}' http://127.0.0.1:8000/api/chat/"))
    assert reply["queue"] == "interactive"
    assert reply["worker"].split("@")[0] in ("assistant_pool", "worker")


def test_database_was_fixed_through_the_renamed_service(host):
    env = dict(line.split("=", 1) for line in host.file(f"{APP_DIR}/.env").content_string.splitlines()
               if "=" in line and not line.startswith("#"))
    out = compose(host, "exec", "-T", "postgres", "psql", "-U", env["POSTGRES_USER"], "-d", env["POSTGRES_DB"],
                  "-tAc", "SELECT count(*) FROM tenant_knowledge WHERE chunk_index IS NULL")
    assert out.stdout.strip() == "0"
    assert host.run("ls /srv/pilito-renamed/backups/*.dump").rc == 0


def test_verify_playbook_passes_with_the_renamed_inventory(host):
    out = host.run(f"cd {ROOT} && ansible-playbook -i molecule/renamed/inventory playbooks/verify.yml")
    assert out.rc == 0, out.stdout[-3000:]


def test_verify_names_priority_queue_celery_app_when_the_producer_cannot_load_it(host):
    """A web whose Celery app lives in another module than the one named (a Flask + Celery layout:
    the web's worker.py, the workers' tasks.py): one line with the reason and the variable to set."""
    out = host.run(f"cd {ROOT} && ansible-playbook -i molecule/renamed/inventory playbooks/verify.yml "
                   "-e priority_queue_celery_app=no_such_module")
    text = " ".join((out.stdout + out.stderr).split())
    assert out.rc != 0
    assert "Unknown error" not in text, text[-3000:]
    assert "could not be asked where it routes tasks" in text and "No module named 'no_such_module'" in text, text[-3000:]
    assert "Set priority_queue_celery_app to the module that defines the producer's Celery app" in text
