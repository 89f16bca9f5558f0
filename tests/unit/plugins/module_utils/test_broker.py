import pytest

from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import (
    BrokerError,
    parse_broker_url,
    priority_step,
    queue_key,
    queue_keys,
)


def test_plain_redis_url_defaults():
    target = parse_broker_url("redis://redis")
    assert (target.scheme, target.hosts, target.db, target.password, target.ssl) == ("redis", [("redis", 6379)], 0, None, False)


def test_credentials_database_and_tls():
    target = parse_broker_url("rediss://celery:s%40cret@broker.internal:6380/2")
    assert target.username == "celery"
    assert target.password == "s@cret"
    assert target.hosts == [("broker.internal", 6380)]
    assert target.db == 2
    assert target.ssl


def test_password_option_wins_over_url():
    assert parse_broker_url("redis://:old@h/0", password="new").password == "new"


def test_describe_masks_the_password():
    described = parse_broker_url("redis://user:topsecret@h:6379/1").describe()
    assert "topsecret" not in described
    assert described == "h:6379 (redis, db 1, user user)"
    assert parse_broker_url("sentinel://s1;sentinel://s2:26380", sentinel_master="m").describe() == (
        "s1:26379,s2:26380 (sentinel, master m, db 0)")


def test_sentinel_urls_list_every_sentinel_and_need_a_master():
    url = "sentinel://:pw@s1:26379;sentinel://:pw@s2;sentinel://:pw@s3:26380/0"
    target = parse_broker_url(url, sentinel_master="mymaster")
    assert target.hosts == [("s1", 26379), ("s2", 26379), ("s3", 26380)]
    assert target.master == "mymaster"
    assert parse_broker_url("sentinel://s1:26379/0?master_name=m1").master == "m1"
    with pytest.raises(BrokerError, match="master name"):
        parse_broker_url(url)


@pytest.mark.parametrize("url, message", [
    ("", "empty"),
    ("amqp://guest@rabbit//", "scheme 'amqp' is not supported"),
    ("redis-cluster://node1:7000", "Redis Cluster cannot be a Celery broker"),
    ("redis://h:notaport/0", "not a valid URL"),
    ("redis:///0", "no host"),
    ("redis://h/zero", "database must be a number"),
    ("redis://a;redis://b", "only sentinel"),
])
def test_malformed_urls_say_what_is_wrong(url, message):
    with pytest.raises(BrokerError, match=message):
        parse_broker_url(url)


def test_errors_never_echo_the_password():
    with pytest.raises(BrokerError) as error:
        parse_broker_url("redis://u:hunter2@h:port/0")
    assert "hunter2" not in str(error.value)


def test_queue_keys_follow_kombu_naming():
    assert queue_key("high_priority", 0) == "high_priority"
    assert queue_key("high_priority", 6) == "high_priority\x06\x166"
    assert queue_key("q", 3, prefix="app:") == "app:q\x06\x163"
    assert queue_keys("q", [9, 0, 3, 6]) == [(0, "q"), (3, "q\x06\x163"), (6, "q\x06\x166"), (9, "q\x06\x169")]


class FailingModule:
    """Just enough of AnsibleModule for connect(): fail_json raises."""

    def __init__(self, **params):
        self.params = dict(broker_password=None, sentinel_master=None, broker_timeout=1.0, **params)

    def fail_json(self, **result):
        raise SystemExit(result)


def test_missing_redis_library_fails_naming_it(monkeypatch):
    from ansible_collections.pilito.priority_queue.plugins.module_utils import broker

    monkeypatch.setattr(broker, "REDIS_IMPORT_ERROR", "Traceback: No module named 'redis'")
    with pytest.raises(SystemExit) as failed:
        broker.connect(FailingModule(broker_url="redis://h/0"))
    assert "redis" in failed.value.args[0]["msg"]
    assert "Failed to import the required Python library" in failed.value.args[0]["msg"]


def test_malformed_url_fails_before_connecting():
    from ansible_collections.pilito.priority_queue.plugins.module_utils import broker

    with pytest.raises(SystemExit) as failed:
        broker.connect(FailingModule(broker_url="sentinel://s1:26379"))
    assert "master name" in failed.value.args[0]["msg"]


@pytest.mark.parametrize("priority, step", [(0, 0), (2, 0), (3, 3), (5, 3), (9, 9), (12, 9), (-1, 0), ("x", 0), (None, 0)])
def test_priority_step_rounds_down_as_kombu_does(priority, step):
    assert priority_step({"properties": {"priority": priority}}, [0, 3, 6, 9]) == step


def test_a_message_without_priority_is_on_step_0():
    assert priority_step({"properties": {}}, [9, 0, 3, 6]) == 0
