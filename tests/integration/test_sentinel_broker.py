"""sentinel:// broker URLs against a real Redis master watched by a real Redis Sentinel.

Both run with host networking on loopback, so the master address the sentinel hands out
(127.0.0.1:<port>) is the one the module connects to."""

import socket
import subprocess
import uuid

import pytest
import redis

from conftest import run_module, wait_until


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def sentinel(demo_images):
    image = demo_images["REDIS_IMAGE"]
    master_port, sentinel_port = free_port(), free_port()
    names = [f"pilito-test-master-{uuid.uuid4().hex[:8]}", f"pilito-test-sentinel-{uuid.uuid4().hex[:8]}"]
    config = (f"port {sentinel_port}\\nbind 127.0.0.1\\n"
              f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\\n")
    try:
        subprocess.run(["docker", "run", "-d", "--rm", "--network", "host", "--name", names[0], image,
                        "redis-server", "--port", str(master_port), "--bind", "127.0.0.1", "--save", ""],
                       check=True, capture_output=True)
        subprocess.run(["docker", "run", "-d", "--rm", "--network", "host", "--name", names[1], image,
                        "sh", "-c", f"printf '{config}' > /tmp/sentinel.conf && exec redis-server /tmp/sentinel.conf --sentinel"],
                       check=True, capture_output=True)
        wait_until(lambda: redis.Redis(port=sentinel_port).sentinel_get_master_addr_by_name("mymaster"), "sentinel")
        yield master_port, sentinel_port
    finally:
        subprocess.run(["docker", "rm", "-f", *names], capture_output=True, check=False)


def test_sentinel_url_finds_the_master(sentinel):
    master_port, sentinel_port = sentinel
    master = redis.Redis(port=master_port)
    master.lpush("high_priority", "m1", "m2")
    result = run_module("celery_queue_length", dict(
        broker_url=f"sentinel://127.0.0.1:{sentinel_port};sentinel://127.0.0.1:1", sentinel_master="mymaster",
        queues=["high_priority"]))
    assert not result.get("failed"), result.get("msg")
    assert result["queues"]["high_priority"]["waiting"] == 2
    assert result["broker"] == f"127.0.0.1:{sentinel_port},127.0.0.1:1 (sentinel, master mymaster, db 0)"
    master.delete("high_priority")


def test_unknown_master_name_is_named(sentinel):
    _master_port, sentinel_port = sentinel
    result = run_module("celery_queue_length", dict(
        broker_url=f"sentinel://127.0.0.1:{sentinel_port}/0?master_name=nosuchmaster", queues=["default"],
        broker_timeout=2))
    assert result["failed"] is True
    assert "nosuchmaster" in result["msg"]
