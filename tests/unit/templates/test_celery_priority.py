"""The rendered Celery config module, imported as a worker imports it: the queue-order backport
(on for kombu before 5.7, off after), the fetch-on-close backport (on before 5.3.2), the
requeue-once backport (on before 5.3.3), the tick-after-timers backport (on before 5.3.0) and the
fetch hold behind the priority_queue_fetch command."""

import importlib.util
import time
import weakref
from types import SimpleNamespace

import kombu
import pytest
from kombu.asynchronous import hub as kombu_hub
from kombu.transport import redis as kombu_redis

from rendered_config import render_celery_config


@pytest.fixture
def load_config(tmp_path, monkeypatch):
    """Import a freshly rendered celery_priority with kombu.VERSION set as given; the Channel class
    gets its own active_queues back afterwards."""
    original = kombu_redis.Channel.__dict__["active_queues"]
    original_close = kombu_redis.Channel.__dict__["close"]
    original_reject = kombu_redis.QoS.__dict__["reject"]
    original_fire_timers = kombu_hub.Hub.__dict__["fire_timers"]
    fetch = {name: kombu_redis.Channel.__dict__[name]
             for name in ("_put", "_brpop_start", "_brpop_read", "_do_restore_message")}
    qos = {name: kombu_redis.QoS.__dict__[name] for name in ("append", "_remove_from_indices")}

    def load(version=tuple(kombu.VERSION)):
        monkeypatch.setattr(kombu, "VERSION", version)
        path = render_celery_config(tmp_path)
        spec = importlib.util.spec_from_file_location("celery_priority_under_test", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    yield load
    kombu_redis.Channel.active_queues = original
    kombu_redis.Channel.close = original_close
    kombu_redis.QoS.reject = original_reject
    kombu_hub.Hub.fire_timers = original_fire_timers
    for name, method in fetch.items():
        setattr(kombu_redis.Channel, name, method)
    for name, method in qos.items():
        setattr(kombu_redis.QoS, name, method)


def fake_channel(active, fanout=()):
    return SimpleNamespace(_active_queues=list(active), active_fanout_queues=set(fanout))


def test_before_kombu_5_7_a_channel_keeps_the_order_it_was_given(load_config):
    config = load_config((5, 2, 4, "", ""))
    assert config.QUEUE_ORDER_BACKPORTED is True
    channel = fake_channel(["low_priority", "high_priority", "celery.pidbox", "default", "high_priority"],
                           fanout=["celery.pidbox"])
    assert kombu_redis.Channel.active_queues.fget(channel) == ["low_priority", "high_priority", "default"]


def test_from_kombu_5_7_nothing_is_changed(load_config):
    before = kombu_redis.Channel.__dict__["active_queues"]
    config = load_config((5, 7, 0, "", ""))
    assert config.QUEUE_ORDER_BACKPORTED is False
    assert kombu_redis.Channel.__dict__["active_queues"] is before


def test_before_kombu_5_3_a_channel_reads_its_fetch_in_flight_before_it_closes(load_config, monkeypatch):
    closed = []
    monkeypatch.setattr(kombu_redis.Channel, "close", lambda self: closed.append(self._in_poll))
    config = load_config((5, 2, 4, "", ""))
    assert config.FETCH_ON_CLOSE_BACKPORTED is True
    read = []

    def brpop_read():
        read.append(True)
        channel._in_poll = None

    channel = SimpleNamespace(_in_poll=object(), _closing=False, connection_errors=(), _brpop_read=brpop_read)
    kombu_redis.Channel.close(channel)
    assert read == [True] and closed == [None] and channel._closing is True
    kombu_redis.Channel.close(SimpleNamespace(_in_poll=None, _closing=False, connection_errors=(), _brpop_read=None))
    assert closed == [None, None]  # nothing in flight: closed as before


def test_from_kombu_5_3_2_close_is_kombus_own(load_config):
    before = kombu_redis.Channel.__dict__["close"]
    config = load_config((5, 3, 2, "", ""))
    assert config.FETCH_ON_CLOSE_BACKPORTED is False
    assert kombu_redis.Channel.__dict__["close"] is before


def test_kombu_5_3_0_and_5_3_1_get_the_fix_too(load_config):
    """Pull request #1733 was released in 5.3.2, not with 5.3.0."""
    assert load_config((5, 3, 1, "", "")).FETCH_ON_CLOSE_BACKPORTED is True


class RecordingQoS:
    """What QoS.reject does: put back (restore_by_tag), delete the reserved copy, mark it done."""

    def __init__(self):
        self.calls = []
        self._dirty = set()
        self._quick_ack = self._dirty.add

    def restore_by_tag(self, tag, leftmost=False):
        self.calls.append(("restore", tag, leftmost))

    def _remove_from_indices(self, tag):
        self.calls.append(("delete", tag))
        return SimpleNamespace(execute=lambda: None)


def test_before_kombu_5_3_3_a_requeue_deletes_the_reserved_copy_once_in_its_transaction(load_config):
    config = load_config((5, 3, 2, "", ""))
    assert config.REQUEUE_ONCE_BACKPORTED is True
    qos = RecordingQoS()
    kombu_redis.QoS.reject(qos, "tag", requeue=True)
    assert qos.calls == [("restore", "tag", True)]  # no second delete after the put-back
    assert qos._dirty == {"tag"}
    qos = RecordingQoS()
    kombu_redis.QoS.reject(qos, "tag", requeue=False)
    assert qos.calls == [("delete", "tag")] and qos._dirty == {"tag"}


def test_from_kombu_5_3_3_reject_is_kombus_own(load_config):
    before = kombu_redis.QoS.__dict__["reject"]
    config = load_config((5, 3, 3, "", ""))
    assert config.REQUEUE_ONCE_BACKPORTED is False
    assert kombu_redis.QoS.__dict__["reject"] is before


def test_an_app_configured_in_code_loads_it_with_config_from_object(load_config):
    from celery import Celery

    app = Celery("plain", broker="redis://broker:6379/0", set_as_current=False)
    app.config_from_object(load_config())
    assert app.conf.broker_url == "redis://broker:6379/0"  # the app's own setting stays
    assert app.conf.task_default_queue == "default"
    assert [queue.name for queue in app.conf.task_queues] == ["high_priority", "default", "low_priority"]
    assert app.conf.broker_transport_options["queue_order_strategy"] == "priority"
    assert app.conf.worker_prefetch_multiplier == 1 and app.conf.task_acks_late is True


def test_a_config_module_takes_it_with_a_star_import(load_config, monkeypatch, tmp_path):
    """celeryconfig.py ending with `from celery_priority import *` gets the settings, and only them."""
    from celery import Celery

    load_config()
    (tmp_path / "appconfig.py").write_text(
        'broker_url = "redis://broker:6379/0"\ntask_default_queue = "jobs"\nresult_expires = 60\n'
        "try:\n    from celery_priority import *\nexcept ImportError:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("celery_priority", "appconfig"):
        monkeypatch.delitem(__import__("sys").modules, name, raising=False)
    app = Celery("configured", set_as_current=False)
    app.config_from_object("appconfig")
    assert app.conf.task_default_queue == "default" and app.conf.result_expires == 60
    assert app.conf.task_acks_late is True
    config = __import__("appconfig")
    assert not hasattr(config, "Queue") and not hasattr(config, "QUEUE_ORDER_BACKPORTED")


def test_settings_are_unchanged_by_the_additions(load_config):
    settings = load_config().settings
    assert [queue.name for queue in settings["task_queues"]] == ["high_priority", "default", "low_priority"]
    assert settings["broker_transport_options"]["queue_order_strategy"] == "priority"
    assert settings["worker_prefetch_multiplier"] == 1 and settings["task_acks_late"] is True


class FakeRedisChannel:
    """What _hold_fetches touches of kombu's Redis channel; fetches are counted, not sent."""

    def __init__(self):
        self.fetches = 0
        self._in_poll = None
        self._active_queues = ["high_priority", "default"]
        self.active_fanout_queues = set()
        self.qos = SimpleNamespace(can_consume=lambda: True)
        self._queue_cycle = SimpleNamespace(consume=lambda n: ["high_priority", "default"][:n])

    @property
    def active_queues(self):
        return self._active_queues

    def _brpop_start(self, timeout=1):
        self.fetches += 1


def worker_state(channel):
    timers = []
    consumer = SimpleNamespace(task_consumer=SimpleNamespace(channel=channel),
                               timer=SimpleNamespace(call_after=lambda secs, fun: timers.append(secs)))
    return SimpleNamespace(consumer=consumer), timers


def test_hold_stops_fetches_once_lets_one_through_resume_ends_it(load_config):
    hold_fetches = load_config()._hold_fetches
    channel = FakeRedisChannel()
    state, timers = worker_state(channel)
    reply = hold_fetches(state, "hold", 10.0)
    assert reply["held"] is True and reply["fetch_order"] == ["high_priority", "default"]
    assert timers == [10.05]
    channel._brpop_start()
    assert channel.fetches == 0
    hold_fetches(state, "once", 10.0)
    channel._brpop_start()
    channel._brpop_start()
    assert channel.fetches == 1
    assert hold_fetches(state, "resume", 10.0)["held"] is False
    channel._brpop_start()
    assert channel.fetches == 2
    assert "_brpop_start" not in vars(channel)


def test_a_hold_runs_out_by_itself(load_config):
    hold_fetches = load_config()._hold_fetches
    channel = FakeRedisChannel()
    state, _timers = worker_state(channel)
    hold_fetches(state, "hold", 0.05)
    channel._brpop_start()
    assert channel.fetches == 0
    time.sleep(0.06)
    assert hold_fetches(state, "status", 0)["held"] is False
    channel._brpop_start()
    assert channel.fetches == 1


def test_a_second_hold_extends_the_first(load_config):
    hold_fetches = load_config()._hold_fetches
    channel = FakeRedisChannel()
    state, _timers = worker_state(channel)
    hold_fetches(state, "hold", 0.05)
    hold_fetches(state, "hold", 10.0)
    time.sleep(0.06)
    channel._brpop_start()
    assert channel.fetches == 0


def test_unknown_mode_and_other_brokers_answer_with_an_error(load_config):
    hold_fetches = load_config()._hold_fetches
    state, _timers = worker_state(FakeRedisChannel())
    assert hold_fetches(state, "pause", 1.0) == {"error": "unknown mode 'pause': use status, hold, once or resume"}
    other, _timers = worker_state(SimpleNamespace())
    assert "not Redis" in hold_fetches(other, "hold", 1.0)["error"]


def test_every_message_sent_is_stamped_with_its_send_time_under_the_header_the_modules_read(load_config):
    from celery.signals import before_task_publish

    from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import SENT_AT_HEADER

    config = load_config()
    assert config.SENT_AT_HEADER == SENT_AT_HEADER
    headers = {"id": "1", "task": "chat.tasks.reply"}
    before = time.time()
    before_task_publish.send(sender="chat.tasks.reply", headers=headers)
    assert before <= headers[SENT_AT_HEADER] <= time.time()
    resent = {SENT_AT_HEADER: 5.0}
    before_task_publish.send(sender="chat.tasks.reply", headers=resent)
    assert resent[SENT_AT_HEADER] == 5.0  # a stamp already there is kept


def test_before_kombu_5_3_the_loop_ticks_again_after_its_timers(load_config):
    """A timer acknowledges a finished task; the tick after it starts the worker's next fetch."""
    config = load_config((5, 2, 4, "", ""))
    assert config.TICK_AFTER_TIMERS_BACKPORTED is True
    calls = []
    hub = kombu_hub.Hub()
    hub.on_tick.add(lambda: calls.append("tick"))
    assert hub.fire_timers() is not None and calls == ["tick"]
    hub.close()


def test_from_kombu_5_3_the_loop_is_kombus_own(load_config):
    before = kombu_hub.Hub.__dict__["fire_timers"]
    config = load_config((5, 3, 0, "", ""))
    assert config.TICK_AFTER_TIMERS_BACKPORTED is False
    assert kombu_hub.Hub.__dict__["fire_timers"] is before


def test_the_keys_and_windows_are_the_ones_the_modules_use_and_every_topology_queue_has_wake_ups(load_config):
    from ansible_collections.pilito.priority_queue.plugins.module_utils import broker

    config = load_config()
    assert config.ATOMIC_TAKE is True
    for name in ("WAKE_KEY", "WAKE_UPS_KEPT", "OWNER_KEY", "ALIVE_KEY", "REDELIVERED_KEY", "DEAD_AFTER_SECONDS"):
        assert getattr(config, name) == getattr(broker, name), name  # the queue check reads and writes them too
    assert config.WAKE_QUEUES == {"high_priority", "default", "low_priority", "celery"}


class Channel:
    """What _note_abandoned_takes reads of a kombu channel (weak references need a class)."""

    def __init__(self, in_poll=None, closing=False):
        self._in_poll, self._closing = in_poll, closing


def test_a_take_on_a_channel_that_stopped_waiting_for_it_counts_as_lost(load_config):
    """kombu forgets the fetch of a connection that dropped (_in_poll None) without reading it: the
    next take, on the worker's new channel, puts it back first."""
    config = load_config()
    waiting, dropped, closed, current = Channel(in_poll="conn"), Channel(), Channel("conn", closing=True), Channel()
    for number, channel in enumerate((waiting, dropped, closed, current)):
        config._takes_sent[id(channel)] = (weakref.ref(channel), ("token", f"nonce-{number}"))
    config._note_abandoned_takes(current)
    assert config._lost_takes == [("token", "nonce-1"), ("token", "nonce-2")]
    assert set(config._takes_sent) == {id(waiting), id(current)}  # still read by its own channel, and ours
    gone = Channel()
    config._takes_sent[id(gone)] = (weakref.ref(gone), ("token", "nonce-4"))
    del gone
    config._note_abandoned_takes(current)
    assert config._lost_takes[-1] == ("token", "nonce-4")
