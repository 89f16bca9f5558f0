"""celery_broker_durability on a fake Redis that answers CONFIG GET and INFO as redis-py returns
them: which settings are a risk, the fallback to INFO, accepted risks, and failures that say what to set."""

import json

import pytest
import redis

from ansible_collections.pilito.priority_queue.plugins.modules import celery_broker_durability
from ansible_collections.pilito.priority_queue.plugins.modules.celery_broker_durability import (
    read_memory,
    read_settings,
    risks_of,
)

from .conftest import SECRET, assert_documented, broker_target

SAFE = {"appendonly": "yes", "save": "3600 1", "maxmemory-policy": "noeviction", "maxmemory": "0"}


class ConfigRedis:
    """CONFIG GET answers bytes, as redis-py does without decode_responses; INFO answers parsed sections."""

    def __init__(self, config=None, config_refused=False, info=None, errorstats=True, info_fails=False):
        self.config = dict(SAFE if config is None else config)
        self.config_refused = config_refused
        self.info_sections = dict(
            persistence={"aof_enabled": 1}, memory={"used_memory": 1048576, "maxmemory": 0, "maxmemory_policy": "noeviction"},
            server={"redis_version": "7.2.4"}, errorstats={"errorstat_OOM": {"count": 3}})
        self.info_sections.update(info or {})
        if not errorstats:
            del self.info_sections["errorstats"]
        self.info_fails = info_fails

    def config_get(self, name):
        if self.config_refused:
            raise redis.ResponseError("unknown command 'CONFIG', with args beginning with: 'GET'")
        return {name.encode(): self.config[name].encode()} if name in self.config else {}

    def info(self, section):
        if self.info_fails:
            raise redis.ConnectionError("Error 111 connecting to broker:6379. Connection refused.")
        if section not in self.info_sections:
            raise redis.ResponseError(f"unknown section {section}")
        return self.info_sections[section]


def settings(appendonly="yes", save="", policy="noeviction", maxmemory=0):
    return dict(appendonly=appendonly, save=save, maxmemory_policy=policy, maxmemory=maxmemory, source="CONFIG GET")


@pytest.fixture
def check(run_module, monkeypatch):
    def run(client, **args):
        monkeypatch.setattr(celery_broker_durability, "connect", lambda module: (broker_target(), client))
        return run_module(celery_broker_durability, **args)
    return run


# --- pure parts ---------------------------------------------------------------------------------------------

def test_settings_are_read_from_config_get_as_text():
    assert read_settings(ConfigRedis(dict(SAFE, maxmemory="104857600"))) == dict(
        appendonly="yes", save="3600 1", maxmemory_policy="noeviction", maxmemory=104857600, source="CONFIG GET")


def test_a_broker_refusing_config_is_read_from_info_without_save_points():
    client = ConfigRedis(config_refused=True, info=dict(persistence={"aof_enabled": 0}, memory={
        "maxmemory": 2048, "maxmemory_policy": "allkeys-lru", "used_memory": 1}))
    assert read_settings(client) == dict(appendonly="no", save=None, maxmemory_policy="allkeys-lru", maxmemory=2048,
                                         source="INFO")


def test_info_without_the_append_only_flag_shows_it_as_unknown():
    client = ConfigRedis(config_refused=True, info=dict(persistence={}))
    assert read_settings(client)["appendonly"] is None


def test_memory_counts_the_writes_refused_for_lack_of_memory():
    assert read_memory(ConfigRedis()) == dict(used_memory=1048576, maxmemory=0, oom_rejections=3, version="7.2.4")


def test_a_redis_before_6_2_has_no_errorstats_and_no_rejections_counted():
    assert read_memory(ConfigRedis(errorstats=False))["oom_rejections"] == 0
    assert read_memory(ConfigRedis(info=dict(errorstats={})))["oom_rejections"] == 0


def test_append_only_and_noeviction_are_safe_whatever_the_save_points():
    assert risks_of(settings(appendonly="yes", save="")) == ([], [])


def test_nothing_on_disk_is_a_restart_loss_naming_appendonly():
    risks, warnings = risks_of(settings(appendonly="no", save="  "))
    assert [risk for risk, _message in risks] == ["restart_loss"] and warnings == []
    assert "appendonly no, save \"\"" in risks[0][1] and "Set appendonly yes" in risks[0][1]


def test_save_points_alone_are_a_warning_not_a_risk():
    risks, warnings = risks_of(settings(appendonly="no", save="3600 1 300 100"))
    assert risks == []
    assert warnings == ['the broker saves snapshots only (save "3600 1 300 100", appendonly no): a crash loses the '
                        'messages queued since the last one; appendonly yes keeps them']


def test_unreadable_save_points_without_appendonly_are_a_restart_loss():
    risks, _warnings = risks_of(settings(appendonly=None, save=None))
    assert [risk for risk, _message in risks] == ["restart_loss"] and "cannot be read" in risks[0][1]
    assert risks_of(settings(appendonly="yes", save=None)) == ([], [])


@pytest.mark.parametrize("maxmemory, limit", [(1048576, "when the broker reaches maxmemory 1048576 bytes"),
                                              (0, "when the broker reaches maxmemory, once set,")])
def test_an_evicting_policy_is_a_risk_naming_the_policy_and_the_limit(maxmemory, limit):
    risks, _warnings = risks_of(settings(policy="allkeys-lru", maxmemory=maxmemory))
    assert risks == [("eviction", f"maxmemory-policy is allkeys-lru: {limit} it deletes keys, queued messages among "
                                  f"them. Set maxmemory-policy noeviction")]


# --- whole module on a fake broker --------------------------------------------------------------------------

def test_a_durable_broker_passes_with_its_settings_and_memory(check):
    failed, result = check(ConfigRedis())
    assert not failed
    assert (result["changed"], result["risks"], result["warnings"]) == (False, [], [])
    assert result["settings"]["source"] == "CONFIG GET" and result["memory"]["oom_rejections"] == 3
    assert result["broker"] == "broker:6379 (redis, db 0)"


def test_each_risk_fails_the_check_saying_what_to_set_or_accept(check):
    failed, result = check(ConfigRedis(dict(SAFE, appendonly="no", save="", **{"maxmemory-policy": "volatile-lru"})))
    assert failed
    assert [risk["risk"] for risk in result["risks"]] == ["restart_loss", "eviction"]
    assert not any(risk["accepted"] for risk in result["risks"])
    assert "; or accept the risk (accept: [restart_loss])" in result["msg"]
    assert result["msg"].endswith("Set maxmemory-policy noeviction; or accept the risk (accept: [eviction])")
    assert result["settings"]["maxmemory_policy"] == "volatile-lru"


def test_an_accepted_risk_warns_and_the_other_still_fails(check):
    client = ConfigRedis(dict(SAFE, appendonly="no", save="", **{"maxmemory-policy": "allkeys-lru"}))
    failed, result = check(client, accept=["restart_loss"])
    assert failed
    assert [(risk["risk"], risk["accepted"]) for risk in result["risks"]] == [("restart_loss", True), ("eviction", False)]
    assert "accept: [restart_loss]" not in result["msg"] and "accept: [eviction]" in result["msg"]
    assert [warning.split(":")[0] for warning in result["warnings"]] == ["accepted"]


def test_every_risk_accepted_passes_with_warnings(check):
    client = ConfigRedis(dict(SAFE, appendonly="no", save="", **{"maxmemory-policy": "allkeys-lru"}))
    failed, result = check(client, accept=["restart_loss", "eviction"])
    assert not failed
    assert len(result["warnings"]) == 2 and all(warning.startswith("accepted: ") for warning in result["warnings"])


def test_check_mode_reads_the_same(check):
    client = ConfigRedis(dict(SAFE, appendonly="no", save="900 1"))
    assert check(client) == check(client, check=True)


def test_a_broker_that_cannot_be_read_fails_naming_it_without_the_password(check):
    failed, result = check(ConfigRedis(config_refused=True, info_fails=True))
    assert failed
    assert result["msg"].startswith("cannot read the settings of the broker at broker:6379 (redis, db 0): Error 111")
    assert SECRET not in json.dumps(result)


def test_an_unknown_risk_to_accept_is_refused(check):
    failed, result = check(ConfigRedis(), accept=["data_loss"])
    assert failed
    assert "accept" in result["msg"] and "data_loss" in result["msg"]


def test_documentation_matches_the_argument_spec(monkeypatch):
    assert_documented(celery_broker_durability, monkeypatch)
