# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Celery's workers, as the modules reach them: remote control over the broker, through a bare
Celery app that knows only the broker. No app code is needed, so it works from the managed host
whatever the app's modules, images or producers are."""

from __future__ import annotations

import time
import traceback
from urllib.parse import quote

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.pilito.priority_queue.plugins.module_utils.broker import BrokerError, parse_broker_url

CELERY_IMPORT_ERROR = None
try:
    from celery import Celery
except ImportError:
    CELERY_IMPORT_ERROR = traceback.format_exc()


class WorkerError(Exception):
    """A problem reaching or commanding workers, with a message safe to show. `errors` maps each
    node that answered with an error to that error."""

    def __init__(self, message, errors=None):
        super().__init__(message)
        self.errors = errors or {}


def kombu_url(target):
    """The broker as a kombu URL, with the password from broker_password if one was given apart."""
    userinfo = ""
    if target.password:
        userinfo = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
    elif target.username:
        userinfo = f"{quote(target.username, safe='')}@"
    return ";".join(f"{target.scheme}://{userinfo}{host}:{port}/{target.db}" for host, port in target.hosts)


def control_app(module, target):
    """A Celery app for remote control on the module's broker; fails the module if Celery is missing."""
    if CELERY_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("celery"), exception=CELERY_IMPORT_ERROR)
    params = module.params
    app = Celery("pilito_priority_queue", set_as_current=False)
    options = {}
    if target.master:
        options["master_name"] = target.master
        if target.password:
            options["sentinel_kwargs"] = {"password": target.password}
    if params.get("broker_key_prefix"):
        options["global_keyprefix"] = params["broker_key_prefix"]
    app.conf.update(
        broker_url=kombu_url(target),
        broker_transport_options=options,
        broker_connection_timeout=params["broker_timeout"],
        broker_connection_retry=False,
        broker_connection_max_retries=0,
    )
    if target.ssl:
        import ssl

        app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return app


def pool_of(node):
    """The pool a node belongs to: rendered pools are named <pool>@<host>."""
    return node.split("@", 1)[0]


def host_of(node):
    """The host a node runs on (its container's host name): the part after the @."""
    return node.split("@", 1)[-1]


def safe_error(exc, target):
    """An exception as text without the broker password, should a client library echo it."""
    text = f"{type(exc).__name__}: {exc}"
    return text.replace(target.password, "********") if target.password else text


def bound_nodes(app):
    """The workers a broadcast reaches: the broker sends it to every control queue bound to the
    control exchange, and no other worker can answer. A worker that shut down warm has unbound its
    queue; one that was killed leaves it bound, and the wait for its answer runs out as before."""
    mailbox = app.control.mailbox
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        members = channel.client.smembers(channel.keyprefix_queue % mailbox.exchange.name)
    suffix = f".{mailbox.namespace}.pidbox"
    queues = (member.decode().split(channel.sep)[-1] for member in members)
    return {queue[:-len(suffix)] for queue in queues if queue.endswith(suffix)}


class _Enough(Exception):
    """Raised from the reply callback to stop waiting once the caller has every answer it needs."""


def ask(app, name, timeout, nodes=None, limit=None, until=None, **arguments):
    """Send a remote-control or inspect command; return {node: reply} of every worker that answered
    within timeout (all workers when nodes is None). kombu waits `timeout` after the last reply; this
    ends the wait once every node asked has answered (every bound one when nodes is None), after
    `limit` replies, or once `until(replies)` holds. The count is ours, not kombu's: kombu's counts
    every message on the reply queue, and a late reply to an earlier command (a ping that ended
    once the hosts asked for had answered) used it up, so an answer still on its way was missed."""
    bound = set()
    if nodes is not None:
        nodes = sorted(nodes)
        if not nodes:
            return {}
        asked = set(nodes)
    elif limit is None:
        bound = bound_nodes(app)
        if not bound:
            return {}
    replies = {}

    def collect(reply):
        replies.update(reply)
        if ((nodes is not None and replies.keys() >= asked)
                or (limit is not None and len(replies) >= limit)
                or (until is not None and until(replies))
                or (bound and bound <= replies.keys())):
            raise _Enough

    try:
        # limit=0: kombu collects until a wait of `timeout` passes with nothing; collect() ends it sooner.
        app.control.broadcast(name, arguments=arguments, destination=nodes, reply=True,
                              timeout=timeout, limit=0, callback=collect)
    except _Enough:
        pass
    return replies


def workers_app(module):
    """The module's broker, parsed, and a Celery app to reach its workers; fails the module clearly."""
    params = module.params
    try:
        target = parse_broker_url(params["broker_url"], params.get("broker_password"), params.get("sentinel_master"))
    except BrokerError as exc:
        module.fail_json(msg=str(exc))
    return target, control_app(module, target)


def active_queues(app, timeout, nodes=None, limit=None):
    """Every worker that answers within timeout -> the queues it consumes, in its own order."""
    replies = ask(app, "active_queues", timeout, nodes=nodes, limit=limit)
    return {node: [queue["name"] for queue in queues or []] for node, queues in replies.items()
            if isinstance(queues, list)}


def nodes_on_hosts(app, hostnames, timeout, round_seconds=1.5):
    """Worker nodes (name@host) whose host part is one of these host names (container host names).
    Pings again until every host has answered, and every worker bound on those hosts with it, or
    timeout has passed: a worker busy under load can miss one round, and a worker not found is a
    worker that stops with its fetch in flight. A round that ends early (every bound worker answered,
    a host still missing) is waited out before the next, so the broker is not pinged in a loop."""
    wanted = set(hostnames)
    found = set()
    deadline = time.monotonic() + timeout
    expected = set()

    def complete(answered):
        seen = set(answered) | found
        return {host_of(node) for node in seen} >= wanted and seen >= expected

    while True:
        started = time.monotonic()
        left = deadline - started
        expected = {node for node in bound_nodes(app) if host_of(node) in wanted}
        round_length = max(0.2, min(round_seconds, left))
        answered = ask(app, "ping", round_length, until=complete)
        found |= {node for node in answered if host_of(node) in wanted}
        if not complete(()) and time.monotonic() < deadline:
            time.sleep(max(0.0, min(started + round_length, deadline) - time.monotonic()))
        if complete(()) or time.monotonic() >= deadline:
            return sorted(found)


def command(app, name, nodes, timeout, **arguments):
    """Send a control command to these nodes. Returns {node: reply}; raises WorkerError naming the
    nodes that did not answer or answered with an error."""
    nodes = sorted(nodes)
    if not nodes:
        return {}
    answers = ask(app, name, timeout, nodes=nodes, **arguments)
    silent = [node for node in nodes if node not in answers]
    if silent:
        raise WorkerError(f"no answer to {name} within {timeout} s from {', '.join(silent)}")
    errors = {node: reply["error"] for node, reply in answers.items()
              if isinstance(reply, dict) and "error" in reply}
    if errors:
        raise WorkerError("; ".join(f"{node} answered {name} with: {error}" for node, error in sorted(errors.items())),
                          errors)
    return answers
