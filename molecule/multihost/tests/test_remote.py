"""After deploy.yml over SSH: hosts with their own engines and /usr/bin/python3, the collection as
installed from its tarball."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
INSTALLED = ROOT / "build" / "multihost" / "collections"
INVENTORY = Path(__file__).resolve().parents[1] / "inventory" / "hosts.yml"
LIBRARY_PACKAGES = ["python3-redis", "python3-celery", "python3-requests", "python3-psycopg2"]


def playbook(name, *args):
    """Run one of the installed collection's playbooks by its name against the scenario's hosts."""
    return subprocess.run(
        ["ansible-playbook", "-i", str(INVENTORY), f"pilito.priority_queue.{name}", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(INSTALLED),
            "PILITO_MULTIHOST_DIR": str(ROOT / "build" / "multihost"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
        },
        check=False,
    )


def on(host_name, command):
    return subprocess.run(
        ["docker", "exec", f"pilito-{host_name}", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def installed_packages(host_name):
    out = on(host_name, "dpkg-query -W -f '${Package} ${Status}\\n' " + " ".join(LIBRARY_PACKAGES) + " 2>/dev/null")
    return {line.split()[0] for line in out.stdout.splitlines() if line.endswith("install ok installed")}


def test_the_collection_runs_from_its_installed_tarball_not_the_working_tree():
    installed = INSTALLED / "ansible_collections" / "pilito" / "priority_queue"
    assert (installed / "MANIFEST.json").is_file()
    assert not installed.is_symlink()
    assert not (installed / "molecule").exists() and not (installed / "tests").exists()


def test_the_deploy_installed_the_modules_libraries_for_the_hosts_own_python():
    assert installed_packages("mh-app") == set(LIBRARY_PACKAGES)
    out = on("mh-app", "/usr/bin/python3 -c 'import redis, celery, requests, psycopg2'")
    assert out.returncode == 0, out.stderr


def test_verify_passes_over_ssh():
    out = playbook("verify")
    assert out.returncode == 0, out.stdout[-3000:]
    assert "mh-app" in out.stdout and "failed=0" in out.stdout


def test_a_host_lacking_the_libraries_is_refused_by_name_when_installing_is_off():
    assert installed_packages("mh-ai") == set()
    out = playbook("verify", "-e", "priority_queue_hosts=mh-ai", "-e", "priority_queue_install_host_packages=false")
    assert out.returncode != 0
    text = " ".join((out.stdout + out.stderr).split())
    assert "mh-ai: its Python (/usr/bin/python3) cannot import redis, celery, requests" in text, text[-2000:]
    assert "Install python3-redis python3-celery python3-requests" in text
    assert installed_packages("mh-ai") == set()


def test_check_mode_installs_nothing_and_says_a_real_run_would():
    out = playbook("verify", "--check", "-e", "priority_queue_hosts=mh-workers")
    assert out.returncode != 0
    text = " ".join((out.stdout + out.stderr).split())
    assert "Check mode installs nothing; a real run installs python3-redis python3-celery python3-requests" in text, text[-2000:]
    assert installed_packages("mh-workers") == set()


@pytest.mark.parametrize("plan", ["plan_c"])
def test_a_rollback_plan_runs_over_ssh_and_verify_passes_after_it(plan):
    out = playbook("rollback", "--tags", plan)
    assert out.returncode == 0, out.stdout[-3000:]
    out = playbook("verify")
    assert out.returncode == 0, out.stdout[-3000:]
