"""Real servers for the integration tests: Redis 7 and PostgreSQL 15 in containers built from
the demo's images, published on ephemeral ports of 127.0.0.1 and removed afterwards."""

import os
import sys
import secrets
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="session")
def demo_images():
    out = subprocess.run([ROOT / "scripts/demo_images.sh"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def start(image, port, *args, env=None):
    name = f"pilito-test-{uuid.uuid4().hex[:8]}"
    env_args = [item for key, value in (env or {}).items() for item in ("-e", f"{key}={value}")]
    docker("run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1::{port}", *env_args, image, *args)
    host_port = int(docker("port", name, str(port)).splitlines()[0].rsplit(":", 1)[1])
    return name, host_port


def wait_until(check, what, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001  (not up yet)
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout} s")
        time.sleep(0.2)


@dataclass
class RedisServer:
    container: str
    host: str
    port: int

    def url(self, db=0):
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db=0):
        import redis

        return redis.Redis(host=self.host, port=self.port, db=db)


@dataclass
class PostgresServer:
    container: str
    host: str
    port: int
    user: str
    password: str
    database: str

    def connect(self):
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=self.database
        )


@contextmanager
def redis_container(image):
    """A Redis of the demo image on a published loopback port, removed afterwards."""
    name, port = start(image, 6379)
    server = RedisServer(name, "127.0.0.1", port)
    try:
        wait_until(lambda: server.client().ping(), "redis")
        yield server
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


@pytest.fixture(scope="session")
def redis_server(demo_images):
    with redis_container(demo_images["REDIS_IMAGE"]) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(demo_images):
    password = secrets.token_urlsafe(16)
    env = {"POSTGRES_USER": "pilito", "POSTGRES_PASSWORD": password, "POSTGRES_DB": "pilito"}
    name, port = start(demo_images["DB_IMAGE"], 5432, env=env)
    server = PostgresServer(name, "127.0.0.1", port, "pilito", password, "pilito")
    try:
        wait_until(lambda: server.connect().close() is None, "postgresql")
        yield server
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


@pytest.fixture
def redis_client(redis_server):
    """A clean database 0 for each test."""
    client = redis_server.client()
    client.flushdb()
    yield client
    client.flushdb()


def pytest_configure(config):
    os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / "build/collections"))


def run_module(module, args, check=False, diff=False, timeout=300, tmp_dir=None, module_defaults=None):
    """Run one of the collection's modules through ansible-playbook on localhost and return its
    result, so the argument spec, check mode and no_log are exercised as in a real play."""
    import json
    import tempfile

    play = [{
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [{"name": "module under test", f"pilito.priority_queue.{module}": args}],
    }]
    if module_defaults:
        play[0]["module_defaults"] = module_defaults
    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        playbook = Path(tmp) / "play.yml"
        playbook.write_text(json.dumps(play))
        cmd = ["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook),
               "-e", "ansible_python_interpreter=" + os.environ.get("PYTHON_FOR_MODULES", sys.executable)]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
               "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "build/collections"), "ANSIBLE_NOCOLOR": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"ansible-playbook gave no JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result = output["plays"][0]["tasks"][0]["hosts"]["localhost"]
    result["_raw_output"] = proc.stdout + proc.stderr
    return result
