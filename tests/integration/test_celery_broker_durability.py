"""celery_broker_durability against real Redis servers: one that keeps nothing on disk (the demo's,
like the runbook's), one with the append-only file, one that evicts, one with snapshots only."""

import subprocess

import pytest

from conftest import RedisServer, run_module, start, wait_until


@pytest.fixture(scope="module")
def redis_with(demo_images):
    """Start a Redis of the demo image with these settings; all removed at the end."""
    names = []

    def started(*settings):
        name, port = start(demo_images["REDIS_IMAGE"], 6379, "redis-server", "--bind", "0.0.0.0",
                           "--protected-mode", "no", *settings)
        names.append(name)
        server = RedisServer(name, "127.0.0.1", port)
        wait_until(lambda: server.client().ping(), "redis")
        return server

    yield started
    for name in names:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_a_broker_that_keeps_nothing_on_disk_fails_naming_the_setting(redis_server):
    result = run_module("celery_broker_durability", dict(broker_url=redis_server.url()))
    assert result["failed"] is True
    assert result["settings"]["appendonly"] == "no" and result["settings"]["save"] == ""
    assert result["msg"].startswith("the broker keeps nothing on disk (appendonly no, save \"\")")
    assert "Set appendonly yes" in result["msg"] and "accept: [restart_loss]" in result["msg"]
    accepted = run_module("celery_broker_durability", dict(broker_url=redis_server.url(), accept=["restart_loss"]))
    assert not accepted.get("failed"), accepted
    assert accepted["risks"][0]["risk"] == "restart_loss" and accepted["risks"][0]["accepted"] is True
    assert any(warning.startswith("accepted: the broker keeps nothing on disk") for warning in accepted["warnings"])


def test_the_append_only_file_and_noeviction_pass(redis_with):
    server = redis_with("--appendonly", "yes", "--save", "")
    result = run_module("celery_broker_durability", dict(broker_url=server.url()))
    assert not result.get("failed"), result
    assert result["risks"] == [] and "warnings" not in result
    assert result["settings"] == dict(appendonly="yes", save="", maxmemory_policy="noeviction", maxmemory=0,
                                      source="CONFIG GET")


def test_an_evicting_broker_fails_naming_the_policy_and_the_limit(redis_with):
    server = redis_with("--appendonly", "yes", "--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    result = run_module("celery_broker_durability", dict(broker_url=server.url(), accept=["restart_loss"]))
    assert result["failed"] is True
    assert result["msg"] == ("maxmemory-policy is allkeys-lru: when the broker reaches maxmemory 104857600 bytes it "
                             "deletes keys, queued messages among them. Set maxmemory-policy noeviction; or accept "
                             "the risk (accept: [eviction])")


def test_snapshots_only_warn_and_a_refused_config_falls_back_to_info(redis_with):
    server = redis_with("--save", "60 1", "--appendonly", "no", "--rename-command", "CONFIG", "")
    result = run_module("celery_broker_durability", dict(broker_url=server.url()))
    # CONFIG is gone, so the save points cannot be read: that is a risk, named as such.
    assert result["settings"]["source"] == "INFO"
    assert result["failed"] is True and "save points cannot be read" in result["msg"]
    readable = redis_with("--save", "60 1", "--appendonly", "no")
    warned = run_module("celery_broker_durability", dict(broker_url=readable.url()))
    assert not warned.get("failed"), warned
    assert any("saves snapshots only (save \"60 1\"" in warning for warning in warned["warnings"])
