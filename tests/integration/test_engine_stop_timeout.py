"""The role's engine stop timeout against a real systemd (a container whose init is systemd, with
Debian's docker.service unit): a deploy gives docker.service a stop timeout the pools' warm shutdown
fits in, once; without priority_queue_manage_engine_stop_timeout, preflight refuses and changes
nothing."""

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, docker, wait_until

HERE = Path(__file__).resolve().parent
DROPIN = "/etc/systemd/system/docker.service.d/pilito-priority-queue.conf"
PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: pilito.priority_queue.priority_queue
        tasks_from: engine_stop_timeout.yml
"""


@pytest.fixture(scope="module")
def systemd_host():
    base = subprocess.run([ROOT / "scripts/build_base_image.sh"], capture_output=True, text=True,
                          check=True).stdout.strip()
    docker("build", "-q", "--build-arg", f"BASE_IMAGE={base}", "-t", "pilito-test-systemd-host",
           str(HERE / "systemd_host"))
    name = f"pilito-test-systemd-{uuid.uuid4().hex[:8]}"
    # systemd as init needs what the multihost scenario's hosts get: the capabilities, /run on tmpfs.
    docker("run", "-d", "--rm", "--name", name, "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
           "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
           "--tmpfs", "/run", "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
           "pilito-test-systemd-host")
    try:
        wait_until(lambda: systemctl(name, "is-system-running").stdout.strip() in ("running", "degraded"),
                   "systemd in the test host")
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def systemctl(host, *args):
    return subprocess.run(["docker", "exec", host, "systemctl", *args], capture_output=True, text=True,
                          check=False)


def stop_timeout(host):
    return systemctl(host, "show", "docker.service", "--property=TimeoutStopUSec", "--value").stdout.strip()


def run(host, tmp_path, action, longest_task, *extra):
    playbook = tmp_path / "engine_stop.yml"
    playbook.write_text(PLAYBOOK)
    proc = subprocess.run(
        ["ansible-playbook", "-i", f"{host},", "-c", "community.docker.docker", str(playbook),
         "-e", json.dumps({"__priority_queue_engine_stop_action": action,
                           "priority_queue_longest_task_seconds": longest_task}), *extra],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"})
    proc.text = " ".join((proc.stdout + proc.stderr).split())
    return proc


def changed(proc):
    return int(proc.stdout.rsplit("changed=", 1)[1].split()[0])


def test_the_deploy_gives_the_engine_a_stop_timeout_the_warm_shutdown_fits_in_once(systemd_host, tmp_path):
    assert stop_timeout(systemd_host) == "1min 30s"  # systemd's default: Debian's unit sets none
    checked = run(systemd_host, tmp_path, "give", 300, "--check", "--diff")
    assert checked.returncode == 0 and changed(checked) >= 1, checked.text[-2000:]
    assert "TimeoutStopSec=345" in checked.text  # the diff: 300 s + 30 s grace + 15 s
    assert stop_timeout(systemd_host) == "1min 30s"  # check mode changed nothing

    given = run(systemd_host, tmp_path, "give", 300)
    assert given.returncode == 0 and changed(given) >= 1, given.text[-2000:]
    assert stop_timeout(systemd_host) == "5min 45s"
    again = run(systemd_host, tmp_path, "give", 300)
    assert again.returncode == 0 and changed(again) == 0, again.text[-2000:]
    # A drop-in of the user's read after ours, with a shorter timeout: the deploy says so, not "done".
    short = "/etc/systemd/system/docker.service.d/zz-short.conf"
    subprocess.run(["docker", "exec", systemd_host, "sh", "-c",
                    f"printf '[Service]\\nTimeoutStopSec=60\\n' >{short}"], check=True)
    systemctl(systemd_host, "daemon-reload")
    try:
        overruled = run(systemd_host, tmp_path, "give", 300)
        assert overruled.returncode != 0
        assert "systemd still stops docker.service after 1min" in overruled.text, overruled.text[-2000:]
        assert "a drop-in read after it" in overruled.text
    finally:
        subprocess.run(["docker", "exec", systemd_host, "rm", "-f", short], check=True)
        systemctl(systemd_host, "daemon-reload")


def test_without_management_preflight_refuses_and_changes_nothing(systemd_host, tmp_path):
    subprocess.run(["docker", "exec", systemd_host, "rm", "-f", DROPIN], check=True)
    systemctl(systemd_host, "daemon-reload")
    assert stop_timeout(systemd_host) == "1min 30s"
    refused = run(systemd_host, tmp_path, "check", 300)
    assert refused.returncode != 0
    assert "systemd stops docker.service after 1min 30s (TimeoutStopUSec)" in refused.text, refused.text[-2000:]
    assert "priority_queue_manage_engine_stop_timeout is false" in refused.text
    assert f"a drop-in {DROPIN}" in refused.text and "TimeoutStopSec=345" in refused.text
    assert stop_timeout(systemd_host) == "1min 30s"
    # A pool whose warm shutdown fits in systemd's 90 s (30 s tasks: 60 s and Docker's 5 s) passes.
    fits = run(systemd_host, tmp_path, "check", 30)
    assert fits.returncode == 0, fits.text[-2000:]
    assert run(systemd_host, tmp_path, "give", 30).stdout.count("changed=0") == 1
