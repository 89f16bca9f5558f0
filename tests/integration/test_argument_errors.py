"""A wrong argument to the role, through each playbook as a user runs it: one line naming the
variable and what is wrong, before any task touches a host (Ansible's own check at a role's start
prints the whole argument spec, 17 KB, around it)."""

import os
import subprocess

import pytest

from conftest import ROOT

PLAYBOOKS = ["deploy", "verify", "rollback", "queue_check", "troubleshoot", "support_bundle"]


def run(playbook, *extra):
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "build/collections"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(ROOT / "playbooks" / f"{playbook}.yml"),
                           "-e", "priority_queue_hosts=localhost", *extra],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_a_wrong_type_is_one_line_naming_the_variable_before_anything_runs(playbook):
    out = run(playbook, "-e", '{"priority_queue_longest_task_seconds": "an hour"}')
    assert out.returncode != 0
    assert len(out.stdout) < 4000, out.stdout[-2000:]
    failures = [line for line in out.stdout.splitlines() if line.startswith("fatal:")]
    assert len(failures) == 2 and "censored" in failures[0], failures
    assert "argument 'priority_queue_longest_task_seconds' is of type str" in failures[1], failures
    assert "Check what the modules need on this host" not in out.stdout  # the first task on the host


def test_a_string_where_a_list_belongs_is_named_the_same_way():
    out = run("verify", "-e", '{"priority_queue_pools": "celery_ai"}')
    failures = [line for line in out.stdout.splitlines() if line.startswith("fatal:")]
    assert "priority_queue_pools" in failures[-1] and len(out.stdout) < 4000, failures
