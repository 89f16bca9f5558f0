# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Celery's Redis broker, as the queue modules see it: the connection (redis://, rediss://,
sentinel://) and where kombu's Redis transport keeps each queue."""

from __future__ import annotations

import base64
import bisect
import json
import time
import traceback
from urllib.parse import parse_qs, unquote, urlsplit

from ansible.module_utils.basic import env_fallback, missing_required_lib

REDIS_IMPORT_ERROR = None
try:
    import redis
    from redis.sentinel import Sentinel
except ImportError:
    REDIS_IMPORT_ERROR = traceback.format_exc()

# kombu's Redis transport: a message of priority p (after rounding down to a step) waits on
# "<queue>" for step 0 and on "<queue>\x06\x16<p>" otherwise; reserved, unacknowledged
# messages sit in the hash "unacked" as JSON [message, exchange, routing_key].
PRIORITY_SEPARATOR = "\x06\x16"
DEFAULT_PRIORITY_STEPS = [0, 3, 6, 9]
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
BINDING_PREFIX = "_kombu.binding."
# The header the rendered celery_priority.py stamps on every message a producer sends (Unix
# seconds): Celery's own messages carry no send time.
SENT_AT_HEADER = "pilito_sent_at"
# Workers that load the rendered celery_priority.py wait on one wake-up list per queue and take a
# message with a script that records it as theirs (a reply lost in the network loses nothing).
# Whatever puts a message on a queue pushes a wake-up beside it, in the same transaction, or the
# message waits up to a second (a worker's wait). Not used under a key prefix.
WAKE_KEY = "priority_queue.wake.{queue}"
WAKE_UPS_KEPT = 100
# The rendered config's watch for dead workers: each worker process notes which delivered message
# it holds (OWNER_KEY: delivery tag -> its token) and when it was last heard (ALIVE_KEY: token ->
# broker time); a message whose holder has been silent for DEAD_AFTER_SECONDS goes back to its
# queue, counted per queue in REDELIVERED_KEY.
OWNER_KEY = "priority_queue.unacked_owner"
ALIVE_KEY = "priority_queue.workers_alive"
REDELIVERED_KEY = "priority_queue.redelivered"
DEAD_AFTER_SECONDS = 20
SCHEMES = ("redis", "rediss", "sentinel")
MASKED = "********"
PROBE_TASK = "celery.accumulate"


def broker_argument_spec():
    return dict(
        broker_url=dict(type="str", required=True, no_log=True, fallback=(env_fallback, ["CELERY_BROKER_URL"])),
        broker_password=dict(type="str", no_log=True, fallback=(env_fallback, ["CELERY_BROKER_PASSWORD"])),
        sentinel_master=dict(type="str"),
        broker_key_prefix=dict(type="str", default="", no_log=False),
        priority_steps=dict(type="list", elements="int", default=list(DEFAULT_PRIORITY_STEPS)),
        broker_timeout=dict(type="float", default=5.0),
    )


class BrokerError(Exception):
    """A broker problem with a message safe to show: no password in it."""


class BrokerTarget:
    """A parsed broker URL. Sentinel URLs list several sentinels separated by ';'."""

    def __init__(self, scheme, hosts, username, password, db, master, ssl):
        self.scheme = scheme
        self.hosts = hosts
        self.username = username
        self.password = password
        self.db = db
        self.master = master
        self.ssl = ssl

    def describe(self):
        """The broker as it may be printed: never the password, and never the URL itself, which
        Ansible masks in all output since O(broker_url) is no_log."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.hosts)
        details = [self.scheme + (" over TLS" if self.ssl and self.scheme == "sentinel" else "")]
        if self.master:
            details.append(f"master {self.master}")
        details.append(f"db {self.db}")
        if self.username:
            details.append(f"user {self.username}")
        return f"{hosts} ({', '.join(details)})"


def _default_port(scheme):
    return 26379 if scheme == "sentinel" else 6379


def parse_broker_url(url, password=None, sentinel_master=None):
    """Parse a Celery/kombu Redis broker URL. Raises BrokerError naming what is wrong."""
    if not url or not url.strip():
        raise BrokerError("broker_url is empty")
    parts = [part.strip() for part in url.split(";") if part.strip()]
    hosts, scheme, username, secret, db, query = [], None, None, None, 0, {}
    for part in parts:
        try:
            split = urlsplit(part)
            port = split.port
        except ValueError as exc:
            raise BrokerError(f"broker_url is not a valid URL: {_mask(part)} ({exc})") from None
        if split.scheme not in SCHEMES:
            raise BrokerError(
                f"broker_url scheme {split.scheme!r} is not supported; use one of {', '.join(SCHEMES)} "
                f"(Redis Cluster cannot be a Celery broker; use Sentinel for high availability)"
            )
        if scheme and split.scheme != scheme:
            raise BrokerError(f"broker_url mixes schemes {scheme!r} and {split.scheme!r}")
        scheme = split.scheme
        if not split.hostname:
            raise BrokerError(f"broker_url has no host: {_mask(part)}")
        hosts.append((split.hostname, port or _default_port(scheme)))
        if split.username:
            username = unquote(split.username)
        if split.password:
            secret = unquote(split.password)
        path = split.path.strip("/")
        if path:
            if not path.isdigit():
                raise BrokerError(f"broker_url database must be a number, got {path!r}")
            db = int(path)
        query.update({key: values[-1] for key, values in parse_qs(split.query).items()})
    if "db" in query:
        if not query["db"].isdigit():
            raise BrokerError(f"broker_url db must be a number, got {query['db']!r}")
        db = int(query["db"])
    master = sentinel_master or query.get("master_name")
    if scheme == "sentinel" and not master:
        raise BrokerError("a sentinel:// broker_url needs the master name: set sentinel_master "
                          "(Celery's broker_transport_options master_name) or ?master_name= in the URL")
    if scheme != "sentinel" and len(hosts) > 1:
        raise BrokerError("only sentinel:// broker URLs may list several hosts separated by ';'")
    return BrokerTarget(scheme, hosts, username, password or secret, db, master if scheme == "sentinel" else None,
                        ssl=scheme == "rediss" or query.get("ssl", "").lower() in ("1", "true", "yes"))


def _mask(url):
    """Mask the password in one URL for error messages."""
    try:
        split = urlsplit(url)
        if split.password:
            return url.replace(":" + split.password + "@", ":" + MASKED + "@", 1)
    except ValueError:
        pass
    return url.split("@", 1)[-1] if "@" in url else url


def queue_key(queue, priority, prefix=""):
    """The Redis list holding one priority level of a queue."""
    return f"{prefix}{queue}{PRIORITY_SEPARATOR}{priority}" if priority else f"{prefix}{queue}"


def wake_up(pipe, queue, prefix="", count=1):
    """Push count wake-ups for queue on pipe, after the messages (a worker woken finds them there)."""
    if prefix or count < 1:
        return pipe
    key = WAKE_KEY.format(queue=queue)
    return pipe.lpush(key, *[1] * min(count, WAKE_UPS_KEPT)).ltrim(key, 0, WAKE_UPS_KEPT - 1)


def queue_keys(queue, priority_steps, prefix=""):
    """Every list of a queue, highest priority (0) first, as kombu consumes them."""
    return [(step, queue_key(queue, step, prefix)) for step in sorted(set(priority_steps))]


def priority_step(message, priority_steps):
    """The step whose list kombu puts a message on: its priority, within 0-9, rounded down to a step."""
    try:
        priority = max(0, min(int(message["properties"]["priority"]), 9))
    except (TypeError, ValueError, KeyError):
        priority = 0
    steps = sorted(set(priority_steps))
    return steps[bisect.bisect(steps, priority) - 1]


def unacked_entries(client, prefix="", batch=1000):
    """Messages reserved by workers, as (delivery tag, entry as stored, message, routing key).
    Entries not in kombu's format are skipped: there is nothing to attribute them to."""
    for tag, raw in client.hscan_iter(prefix + UNACKED_KEY, count=batch):
        try:
            entry = json.loads(raw)
            yield tag, raw, entry[0], entry[2]
        except (ValueError, IndexError, KeyError, TypeError):
            continue


# Back at the head of its queue only if it is still what was read and still held by that worker.
PUT_BACK_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] or redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[3] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('RPUSH', KEYS[4], ARGV[4])
redis.call('HINCRBY', KEYS[5], ARGV[5], 1)
if KEYS[6] then
  redis.call('LPUSH', KEYS[6], 1)
  redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[6]) - 1)
end
return 1
"""


def put_back_dead(client, queues, priority_steps, prefix="", dead_after=DEAD_AFTER_SECONDS, check_mode=False):
    """What the rendered config's watch does, for when no worker lives to do it: each message of
    these queues whose holder has been silent for dead_after seconds, back at the head of its queue,
    marked redelivered and counted. Returns ({queue: count}, why nothing was judged or None). Not
    while the broker has been up for less than twice dead_after: after a restart, live workers may
    not have been heard again yet."""
    uptime = int(client.info("server").get("uptime_in_seconds", 0))
    if uptime < 2 * dead_after:
        return {}, f"the broker has been up {uptime} s, less than twice dead_after_seconds: its workers may not have reconnected"
    seconds, micros = client.time()
    now = seconds + micros / 1e6
    alive = {token: float(seen) for token, seen in client.hgetall(prefix + ALIVE_KEY).items()}
    tags = client.zrangebyscore(prefix + UNACKED_INDEX_KEY, "-inf", now - dead_after, start=0, num=1000)
    if not tags:
        return {}, None
    script = None if check_mode else client.register_script(PUT_BACK_SCRIPT)
    put_back = {}
    for tag, owner, raw in zip(tags, client.hmget(prefix + OWNER_KEY, tags), client.hmget(prefix + UNACKED_KEY, tags)):
        if owner is None or raw is None or now - alive.get(owner, 0.0) <= dead_after:
            continue  # taken by a worker without the config (the visibility timeout's), or alive
        try:
            message, _exchange, queue = json.loads(raw)
            parts = (message.get("headers"), message["properties"].get("delivery_info"))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        if queue not in queues:
            continue
        for part in parts:
            if isinstance(part, dict):
                part["redelivered"] = True
        keys = [prefix + UNACKED_KEY, prefix + UNACKED_INDEX_KEY, prefix + OWNER_KEY,
                queue_key(queue, priority_step(message, priority_steps), prefix), prefix + REDELIVERED_KEY]
        if not prefix:
            keys.append(WAKE_KEY.format(queue=queue))
        if check_mode or script(keys=keys, args=[tag, raw, owner, json.dumps(message), queue, WAKE_UPS_KEPT]):
            put_back[queue] = put_back.get(queue, 0) + 1
    return put_back, None


def measure(client, queues, priority_steps, prefix="", count_unacked=True, now=None):
    """Each queue's waiting messages per priority list, its reserved ones, and how long the message
    next in line has waited (None where no message says when it was sent). One pipelined round
    trip for the lists; the unacked hash is scanned only when it is not empty."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for _step, key in queue_keys(queue, priority_steps, prefix):
            pipe.llen(key)
            pipe.lindex(key, -1)  # kombu pushes on the left and takes from the right
        pipe.exists(f"{prefix}{BINDING_PREFIX}{queue}")
    pipe.hlen(f"{prefix}{UNACKED_KEY}")
    replies = iter(pipe.execute())
    now = now if now is not None else time.time()
    result = {}
    for queue in queues:
        by_priority, sent = {}, []
        for step, _key in queue_keys(queue, priority_steps, prefix):
            by_priority[str(step)] = next(replies)
            sent.append(sent_at(next(replies)))
        bound = bool(next(replies))
        waiting = sum(by_priority.values())
        sent = [value for value in sent if value is not None]
        result[queue] = dict(total=waiting, waiting=waiting, by_priority=by_priority, unacked=0,
                             known=bound or waiting > 0,
                             oldest_age_seconds=round(max(0.0, now - min(sent)), 3) if sent else None)
    unacked_size = next(replies)
    if count_unacked and unacked_size:
        for routing_key, count in unacked_by_routing_key(client, prefix).items():
            if routing_key in result:
                result[routing_key]["unacked"] = count
                result[routing_key]["total"] += count
                result[routing_key]["known"] = True
    return result


def sent_at(raw):
    """When a stored message was sent, from the header the rendered config stamps; None without it."""
    if not raw:
        return None
    try:
        value = json.loads(raw)["headers"][SENT_AT_HEADER]
        return float(value) if not isinstance(value, bool) else None
    except (ValueError, KeyError, TypeError):
        return None


def unacked_by_routing_key(client, prefix="", batch=1000):
    """How many reserved messages each routing key (Celery's default: the queue name) holds."""
    counts = {}
    for _tag, _raw, _message, routing_key in unacked_entries(client, prefix, batch):
        counts[routing_key] = counts.get(routing_key, 0) + 1
    return counts


def probe_message(queue, task_id, delivery_tag, origin="pilito-probe", ignore_result=False):
    """A Celery protocol 2 message for celery.accumulate(), which every Celery app has, as kombu's
    Redis transport stores it: the probe the modules time and order without any app code."""
    body = [[task_id], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    return {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": PROBE_TASK, "id": task_id, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
            "parent_id": None, "argsrepr": repr((task_id,)), "kwargsrepr": "{}", "origin": origin,
            "ignore_result": ignore_result,
        },
        "properties": {
            "correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": delivery_tag,
        },
    }


def connect(module):
    """A checked Redis client for the module's broker options; fails the module clearly."""
    if REDIS_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    params = module.params
    try:
        target = parse_broker_url(params["broker_url"], params.get("broker_password"), params.get("sentinel_master"))
    except BrokerError as exc:
        module.fail_json(msg=str(exc))
    try:
        return target, _client(target, params["broker_timeout"])
    except BrokerError as exc:
        module.fail_json(msg=str(exc), broker=target.describe())


def _client(target, timeout):
    common = dict(db=target.db, username=target.username, password=target.password,
                  socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        if target.scheme == "sentinel":
            sentinel = Sentinel(target.hosts, socket_timeout=timeout, sentinel_kwargs=dict(
                username=target.username, password=target.password, socket_timeout=timeout))
            client = sentinel.master_for(target.master, ssl=target.ssl, **common)
        else:
            host, port = target.hosts[0]
            client = redis.Redis(host=host, port=port, ssl=target.ssl, **common)
        client.ping()
        return client
    except redis.AuthenticationError:
        raise BrokerError(f"the broker rejected the credentials for {target.describe()}") from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise BrokerError(f"the broker rejected the credentials for {target.describe()}") from None
        raise BrokerError(f"the broker at {target.describe()} answered with an error: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise BrokerError(f"cannot reach the broker at {target.describe()}: {_clean(exc, target)}") from None


def _clean(exc, target):
    """Exception text without the password, should a client library ever echo it."""
    text = str(exc)
    return text.replace(target.password, MASKED) if target.password else text
