"""celery_latency_probe against a real Redis and a real Celery worker."""

import os
import subprocess
import sys
import time

import pytest

from conftest import run_module

WORKER_APP = """
import os
from celery import Celery
app = Celery("probeapp", broker=os.environ["BROKER"], backend=os.environ["BACKEND"])
app.conf.worker_prefetch_multiplier = 1
"""


@pytest.fixture
def worker(redis_server, redis_client, tmp_path):
    """A Celery worker (solo pool) consuming high_priority, with a Redis result backend."""
    (tmp_path / "probeapp.py").write_text(WORKER_APP)
    env = {**os.environ, "BROKER": redis_server.url(0), "BACKEND": redis_server.url(1), "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "probeapp", "worker", "-Q", "high_priority", "-P", "solo",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not redis_client.exists("_kombu.binding.high_priority"):
        assert proc.poll() is None, "the worker exited"
        assert time.monotonic() < deadline, "the worker did not declare its queue within 60 s"
        time.sleep(0.1)
    yield proc
    proc.terminate()
    proc.wait(timeout=30)
    redis_server.client(1).flushdb()


def test_measures_pickup_and_done_and_leaves_nothing(redis_server, redis_client, worker):
    result = run_module("celery_latency_probe", dict(
        broker_url=redis_server.url(0), result_backend_url=redis_server.url(1), queue="high_priority",
        count=8, probe_timeout=20))
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    pickup, done = result["pickup"], result["done"]
    assert len(pickup["samples"]) == 8 and len(done["samples"]) == 8
    assert 0 < pickup["p50"] <= pickup["p95"] <= pickup["p99"] <= pickup["max"] < 20
    assert done["p50"] >= pickup["p50"]
    assert redis_client.llen("high_priority") == 0
    assert redis_server.client(1).keys("celery-task-meta-*") == []


def test_threshold_fails_with_the_figures(redis_server, worker):
    result = run_module("celery_latency_probe", dict(
        broker_url=redis_server.url(0), queue="high_priority", count=3, threshold_seconds=0.0000001,
        threshold_percentile="p50"))
    assert result["failed"] is True
    assert result["msg"].startswith("pickup latency p50 on queue high_priority is ")
    assert "above the threshold of 1e-07 s" in result["msg"]
    assert len(result["pickup"]["samples"]) == 3


def test_queue_without_a_worker_fails_and_withdraws_the_probe(redis_server, redis_client):
    result = run_module("celery_latency_probe", dict(
        broker_url=redis_server.url(0), queue="nobody_consumes_this", count=2, probe_timeout=1))
    assert result["failed"] is True
    assert "no worker took it; it was withdrawn" in result["msg"]
    assert redis_client.llen("nobody_consumes_this") == 0


def test_check_mode_sends_nothing(redis_server, redis_client):
    result = run_module("celery_latency_probe", dict(
        broker_url=redis_server.url(0), queue="nobody_consumes_this", count=2, probe_timeout=1), check=True)
    assert not result.get("failed")
    assert "pickup" not in result
    assert redis_client.llen("nobody_consumes_this") == 0


def test_without_a_result_backend_no_result_is_left_behind(redis_server, redis_client, worker):
    """The worker's app has a result backend (db 1); the module is not told of it."""
    result = run_module("celery_latency_probe", dict(broker_url=redis_server.url(0), queue="high_priority", count=5))
    assert not result.get("failed"), result.get("msg")
    time.sleep(0.5)  # a result would be stored right after the probe ran
    assert redis_server.client(1).keys("celery-task-meta-*") == []


def test_a_long_wait_scans_the_queue_tens_of_times_a_second_not_thousands(redis_server, redis_client):
    def lpos_calls():
        return int(redis_client.info("commandstats").get("cmdstat_lpos", {}).get("calls", 0))

    before = lpos_calls()
    result = run_module("celery_latency_probe", dict(
        broker_url=redis_server.url(0), queue="nobody_consumes_this", count=1, probe_timeout=2))
    assert result["failed"] is True
    calls = lpos_calls() - before
    assert calls < 400, f"{calls} LPOS scans in a 2 s wait"  # polling every 0.5 ms made about 4,000


def test_count_is_bounded(redis_server):
    result = run_module("celery_latency_probe", dict(broker_url=redis_server.url(0), queue="q", count=0))
    assert result["failed"] is True
    assert result["msg"] == "count must be between 1 and 10000, got 0"
