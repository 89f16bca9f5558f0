"""Two draining workers pass one message back and forth, and it stays: on kombu before 5.3.3 (the
demo image's 5.2.4) a worker that puts back a message it cannot deliver deletes its reserved copy
a second time after the put-back; a second draining worker that took the message in between
loses its reserved copy to it, puts back nothing, and the message is gone (kombu issue #1800).
Seen in the multihost scenario during plan C, which drains every worker at once. The rendered
config carries kombu 5.3.3's fix; without it the same sequence loses the message."""

import json

import pytest

from conftest import docker
# readable_tmp is a fixture, used by name.
from worker_harness import app_dir, readable_tmp  # noqa: F401 # pylint: disable=unused-import

# Both workers run kombu's own "No consumers" path (Transport._reject_inbound_message): reserve the
# message, then reject it with requeue. The second fetches it right after the first put it back,
# before the first's reject returns: the order the broker's trace showed.
RACE = """
import json, os
import redis
import celery_priority  # the rendered config: its backports apply on import
from kombu import Connection, Exchange, Producer, Queue

url = os.environ["BROKER"]
queue = Queue("default", Exchange("default"), routing_key="default")
with Connection(url) as first, Connection(url) as second:
    Producer(first.channel()).publish({"n": 1}, exchange=queue.exchange, routing_key="default", declare=[queue])
    a, b = first.default_channel, second.default_channel

    def fetch(channel):
        message = channel.Message(channel._get("default"), channel=channel)
        channel.qos.append(message, message.delivery_tag)
        return message

    taken_by_b = []
    put_back = a.qos.restore_by_tag

    def put_back_then_b_fetches(tag, client=None, leftmost=False):
        put_back(tag, client=client, leftmost=leftmost)
        taken_by_b.append(fetch(b))

    a.qos.restore_by_tag = put_back_then_b_fetches
    a.basic_reject(fetch(a).delivery_tag, requeue=True)
    b.basic_reject(taken_by_b[0].delivery_tag, requeue=True)
    client = redis.Redis.from_url(url)
    print(json.dumps({"backported": celery_priority.REQUEUE_ONCE_BACKPORTED,
                      "waiting": client.llen("default"), "reserved": client.hlen("unacked")}))
"""


@pytest.mark.parametrize("requeue_backport", [True, False], ids=["with the fix", "without it"])
def test_a_message_two_draining_workers_put_back_stays_on_its_queue(
        redis_server, redis_client, demo_images, readable_tmp, requeue_backport):
    redis_client.flushdb()
    directory = readable_tmp / "race"
    directory.mkdir(mode=0o755)
    app_dir(directory, requeue_backport=requeue_backport)
    out = docker("run", "--rm", "--network", f"container:{redis_server.container}",
                 "-v", f"{directory}:/orderapp:ro", "-e", "PYTHONPATH=/orderapp",
                 "-e", "BROKER=redis://127.0.0.1:6379/0", demo_images["APP_IMAGE"], "python3", "-c", RACE)
    state = json.loads(out.splitlines()[-1])
    assert state["backported"] is requeue_backport  # the image's kombu is older than 5.3.3
    if requeue_backport:
        assert (state["waiting"], state["reserved"]) == (1, 0), state
    else:
        assert (state["waiting"], state["reserved"]) == (0, 0), state  # lost: the bug is real here
