"""The verifiers' failures, one line each, in build/molecule_failures.txt: `make molecule` prints
that file last when a scenario fails, since CI keeps only the tail of the output. And what the
scenarios that count tasks share: where in the broker a task that never ran is."""

from pathlib import Path

import pytest
import redis

FAILURES = Path(__file__).resolve().parent.parent / "build" / "molecule_failures.txt"


def pytest_runtest_logreport(report):
    if report.failed:
        message = report.longreprtext.strip().splitlines()
        reason = next((line[1:].strip() for line in message if line.startswith("E ")), message[-1] if message else "")
        FAILURES.parent.mkdir(exist_ok=True)
        with FAILURES.open("a") as out:
            out.write(f"{report.nodeid} ({report.when}): {reason[:1500]}\n")


def _where_in_the_broker(broker_url, task_ids):
    """Each task id -> the broker keys whose values mention it (waiting lists, the unacked hash)."""
    client = redis.Redis.from_url(broker_url)
    found = {task: [] for task in task_ids}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        values = client.lrange(key, 0, -1) if kind == b"list" else client.hvals(key) if kind == b"hash" else []
        for value in values:
            for task in task_ids:
                if task.encode() in value:
                    found[task].append(key.decode(errors="replace"))
    return found


@pytest.fixture
def where_in_the_broker():
    """where_in_the_broker(broker_url, task_ids), for the message of a count that found tasks missing."""
    return _where_in_the_broker
