"""Monitoring on the deployed demo host, after test_deployed.py and before the rollback plans (pytest
runs the files in name order): Flower behind its password, the queue check and its metrics file
and cron entry against faults made here, and a broker that keeps nothing on disk refused."""

import base64
import json
import os
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import APP_DIR, celery, compose, dotenv, playbook, post

FLOWER = "http://127.0.0.1:5555/"


def get(path, user=None, password=None):
    """(status, body) of a GET to Flower, with basic auth when given."""
    request = urllib.request.Request(FLOWER + path)
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def test_flower_refuses_requests_without_the_password_and_lists_every_pool_with_it():
    password = dotenv()["FLOWER_PASSWORD"]
    assert get("")[0] == 401
    assert get("api/workers")[0] == 401
    assert get("api/workers", "admin", "not-the-password")[0] == 401
    status, body = get("api/workers?refresh=1", "admin", password)
    assert status == 200
    assert {node.split("@")[0] for node in json.loads(body)} == {"celery_ai", "celery_worker"}
    assert get("", "admin", password)[0] == 200


def test_flower_listens_on_loopback_only_and_its_settings_are_its_users_alone():
    ports = subprocess.run(["docker", "port", "pilito-demo-flower-1", "5555"], capture_output=True, text=True,
                           check=True).stdout.split()
    assert ports == ["127.0.0.1:5555"]
    folder = Path(f"{APP_DIR}/priority_queue/flower")
    assert (folder.stat().st_uid, oct(folder.stat().st_mode & 0o777)) == (65534, "0o500")
    for settings in folder.iterdir():
        assert (settings.stat().st_uid, oct(settings.stat().st_mode & 0o777)) == (65534, "0o400"), settings


def test_the_flower_password_is_in_no_output_log_or_rendered_file():
    password = dotenv()["FLOWER_PASSWORD"]
    rc, out, changed = playbook("verify.yml", "-vvv")
    assert rc == 0 and changed == 0, out[-3000:]
    assert password not in out
    for service in ("flower", "web", "celery_worker", "celery_ai", "redis"):
        logs = compose("logs", "--no-color", service)
        assert logs.returncode == 0 and password not in logs.stdout + logs.stderr, service
    for rendered in ("docker-compose.priority-queue.yml", "priority_queue/celery_priority.py",
                     "priority_queue/topology.json"):
        assert password not in Path(f"{APP_DIR}/{rendered}").read_text(), rendered
    inspected = subprocess.run(["docker", "inspect", "pilito-demo-flower-1"], capture_output=True, text=True,
                               check=True).stdout
    assert password not in inspected


def test_flower_published_beyond_loopback_without_authentication_is_refused_and_nothing_changes(tmp_path):
    rendered = [Path(f"{APP_DIR}/docker-compose.priority-queue.yml"), Path(f"{APP_DIR}/priority_queue/topology.json")]
    before = [path.read_bytes() for path in rendered]
    public = tmp_path / "public.yml"
    public.write_text(json.dumps({"priority_queue_flower_bind": "0.0.0.0", "priority_queue_flower_users": {}}))
    rc, out, changed = playbook("deploy.yml", "-e", f"@{public}")
    assert rc != 0 and changed == 0, out[-3000:]
    assert "priority_queue_flower_bind 0.0.0.0 publishes Flower beyond loopback without authentication" in out
    assert [path.read_bytes() for path in rendered] == before
    assert get("")[0] == 401


@pytest.mark.parametrize("options, said", [
    ({"priority_queue_longest_task_seconds": 0},
     "priority_queue_longest_task_seconds must be a whole number of seconds above 0"),
    ({"priority_queue_legacy_queues": ["celery", "default"]},
     "priority_queue_legacy_queues lists 'default', which is also one of priority_queue_queues"),
    ({"priority_queue_queue_check_thresholds": {"crawl": {"max_messages": 10}}},
     "priority_queue_queue_check_thresholds['crawl']: 'crawl' is not a queue of the topology"),
    ({"priority_queue_queue_check_thresholds": {"default": {"max_messages": -1}}},
     "priority_queue_queue_check_thresholds['default'].max_messages must be a whole number not below 0"),
])
def test_options_that_would_break_the_topology_are_refused_by_name_and_nothing_changes(tmp_path, options, said):
    rendered = [Path(f"{APP_DIR}/docker-compose.priority-queue.yml"), Path(f"{APP_DIR}/priority_queue/topology.json")]
    before = [path.read_bytes() for path in rendered]
    extra = tmp_path / "options.yml"
    extra.write_text(json.dumps(options))
    rc, out, changed = playbook("deploy.yml", "-e", f"@{extra}")
    assert rc != 0 and changed == 0, out[-3000:]
    assert said in out, out[-3000:]
    assert [path.read_bytes() for path in rendered] == before


def test_a_broker_that_keeps_nothing_on_disk_is_refused_unless_the_risk_is_accepted():
    rc, out, changed = playbook("deploy.yml", "-e", '{"priority_queue_broker_accepted_risks": []}')
    assert rc != 0 and changed == 0, out[-3000:]
    assert "the broker keeps nothing on disk (appendonly no, save \"\")" in out
    assert "priority_queue_broker_accepted_risks: [restart_loss]" in out


def metrics(path):
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(path.read_text()) for sample in family.samples}


@pytest.fixture
def cron_job(tmp_path):
    """The queue check's cron entry, installed by queue_check.yml into a file of this test, and the
    command it runs; removed again by a run without it."""
    cron_file = tmp_path / "pilito_priority_queue_check"
    textfile = tmp_path / "priority_queue.prom"
    extra = tmp_path / "cron.yml"
    extra.write_text(json.dumps({"priority_queue_queue_check_cron": True,
                                 "priority_queue_queue_check_cron_file": str(cron_file),
                                 "priority_queue_queue_check_textfile": str(textfile)}))
    rc, out, _changed = playbook("queue_check.yml", "-e", f"@{extra}")
    assert rc == 0, out[-3000:]
    line = [entry for entry in cron_file.read_text().splitlines() if entry.startswith("* * * * * ")]
    assert len(line) == 1
    user, command = line[0].split(" ", 6)[5:]
    assert user == "root"
    # The entry reads its settings from the inventory; this test gave its own with -e, so hand them on.
    command = command.replace("\\%", "%").replace(
        " pilito.priority_queue.queue_check", f" -e @{shlex.quote(str(extra))} pilito.priority_queue.queue_check")
    yield command, textfile
    rc, out, _changed = playbook("queue_check.yml", "-e", f"priority_queue_queue_check_cron_file={cron_file}")
    assert rc == 0 and not cron_file.exists(), out[-3000:]


def run_cron(command):
    started = time.monotonic()
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=300, check=False,
                         env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")})
    return out.returncode, out.stdout + out.stderr, time.monotonic() - started


def test_the_queue_check_is_quiet_when_well_and_names_each_breach_when_a_queue_loses_its_consumers(cron_job):
    command, textfile = cron_job
    rc, out, seconds = run_cron(command)
    assert (rc, out) == (0, ""), out
    print(f"one scheduled queue check: {seconds:.1f} s")
    healthy = metrics(textfile)
    assert healthy[("priority_queue_queue_consumers", (("queue", "high_priority"),))] == 2
    assert healthy[("priority_queue_check_breaches", ())] == 0

    # The fault: every worker stops consuming low_priority while crawls are queued on it.
    workers = json.loads(celery("inspect", "active_queues", "--json", "--timeout", "5"))
    general = sorted(node for node in workers if node.startswith("celery_worker@"))
    celery("control", "cancel_consumer", "low_priority", "--timeout", "5")
    try:
        post("/api/backlog/", {"crawls": 6, "pages": 0})
        time.sleep(2)
        rc, out, _seconds = run_cron(command)
        assert rc != 0
        assert re.search(r"queue low_priority: \d+ messages wait and no worker consumes it", out), out
        breached = metrics(textfile)
        assert breached[("priority_queue_queue_consumers", (("queue", "low_priority"),))] == 0
        assert breached[("priority_queue_queue_messages", (("queue", "low_priority"),))] >= 6
        assert breached[("priority_queue_queue_oldest_message_age_seconds", (("queue", "low_priority"),))] >= 2
        assert breached[("priority_queue_check_breaches", ())] == 1
    finally:
        celery("control", "add_consumer", "low_priority", "--destination", ",".join(general), "--timeout", "5")
    deadline = time.monotonic() + 120
    while True:
        rc, out, _seconds = run_cron(command)
        if rc == 0 or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert (rc, out) == (0, ""), out


def test_the_queue_check_fails_with_one_line_per_threshold_it_was_given(tmp_path):
    thresholds = tmp_path / "thresholds.yml"
    thresholds.write_text(json.dumps({"priority_queue_queue_check_thresholds": {
        "high_priority": {"min_consumers": 3}, "default": {"min_consumers": 2}}}))
    rc, out, _changed = playbook("queue_check.yml", "-e", f"@{thresholds}")
    assert rc != 0
    assert "queue high_priority: 2 workers consume it, fewer than min_consumers 3" in out
    assert "queue default: 1 workers consume it, fewer than min_consumers 2" in out
    bad = tmp_path / "bad.yml"
    bad.write_text(json.dumps({"priority_queue_queue_check_thresholds": {"urgent": {"max_messages": 1}}}))
    rc, out, _changed = playbook("queue_check.yml", "-e", f"@{bad}")
    assert rc != 0
    assert "priority_queue_queue_check_thresholds['urgent']: 'urgent' is not a queue of the topology" in out
