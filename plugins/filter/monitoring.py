# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Monitoring's checks and derived values: the queue check's thresholds, Flower's settings."""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.pilito.priority_queue.plugins.filter.topology import memory_bytes

THRESHOLD_KINDS = ("max_messages", "max_age_seconds", "min_consumers")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def queue_check_errors(thresholds, queues):
    """Problems with priority_queue_queue_check_thresholds, each naming it; empty when sound."""
    variable = "priority_queue_queue_check_thresholds"
    if not isinstance(thresholds, dict):
        return [f"{variable} must map queue names to limits, got {thresholds!r}"]
    errors = []
    for queue, limits in thresholds.items():
        where = f"{variable}[{queue!r}]"
        if queue not in queues:
            errors.append(f"{where}: {queue!r} is not a queue of the topology ({', '.join(queues)})")
        if not isinstance(limits, dict) or set(limits) - set(THRESHOLD_KINDS):
            errors.append(f"{where} may set {', '.join(THRESHOLD_KINDS)}; got {limits!r}")
            continue
        for kind, value in limits.items():
            whole = kind != "max_age_seconds"
            if not _number(value) or (whole and not isinstance(value, int)):
                errors.append(f"{where}.{kind} must be a {'whole ' if whole else ''}number not below 0, "
                              f"got {value!r}")
    return errors


def queue_check_thresholds(queues, thresholds):
    """Every queue of the topology needs at least one consumer; the operator's limits on top."""
    merged = {queue: {"min_consumers": 1} for queue in queues}
    for queue, limits in (thresholds or {}).items():
        merged[queue] = dict(merged.get(queue, {}), **limits)
    return merged


OAUTH_FIELDS = ("provider", "key", "secret", "redirect_uri", "allowed")
URL_PREFIX = re.compile(r"^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$")


def is_loopback(address):
    """Whether a bind address keeps a port on this host alone."""
    if str(address).strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(address).strip("[]")).is_loopback
    except ValueError:
        return False


def flower_errors(flower, app_services=None):
    """Problems with Flower's settings, each naming its variable and never a secret's value; empty
    when sound. flower: bind, port, users, oauth, open_metrics, url_prefix, memory, service, uid."""
    errors = []
    users = flower.get("users") or {}
    oauth = flower.get("oauth") or {}
    bind = str(flower.get("bind", ""))
    if not isinstance(users, dict):
        errors.append("priority_queue_flower_users must map user names to passwords")
        users = {}
    for user, password in users.items():
        if not isinstance(user, str) or not user or ":" in user:
            errors.append(f"priority_queue_flower_users: the user name {user!r} must be a non-empty name without ':'")
        if not isinstance(password, str) or not password:
            errors.append(f"priority_queue_flower_users[{user!r}] has no password (a string, from a vault)")
    if not isinstance(oauth, dict):
        errors.append(f"priority_queue_flower_oauth must map {', '.join(OAUTH_FIELDS)} to their values")
        oauth = {}
    if oauth:
        unknown = sorted(set(oauth) - set(OAUTH_FIELDS))
        missing = [field for field in OAUTH_FIELDS if not oauth.get(field)]
        if unknown:
            errors.append(f"priority_queue_flower_oauth has unknown settings {', '.join(unknown)}; "
                          f"known: {', '.join(OAUTH_FIELDS)}")
        if missing:
            errors.append(f"priority_queue_flower_oauth lacks {', '.join(missing)}")
        if users:
            errors.append("set priority_queue_flower_users or priority_queue_flower_oauth, not both")
    try:
        ipaddress.ip_address(bind.strip("[]"))
    except ValueError:
        if bind.lower() != "localhost":
            errors.append(f"priority_queue_flower_bind must be an IP address of this host, got {bind!r}")
    if not is_loopback(bind):
        if not users and not oauth:
            errors.append(f"priority_queue_flower_bind {bind} publishes Flower beyond loopback without "
                          f"authentication: set priority_queue_flower_users (basic auth, passwords from a vault) or "
                          f"priority_queue_flower_oauth, or keep priority_queue_flower_bind 127.0.0.1")
        if flower.get("open_metrics") is not True:
            errors.append(f"priority_queue_flower_bind {bind}: Flower answers /metrics and /healthcheck there "
                          f"without authentication. Set priority_queue_flower_open_metrics: true if that is "
                          f"acceptable, or keep Flower on 127.0.0.1 behind a reverse proxy")
    port = flower.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        errors.append(f"priority_queue_flower_port must be a port number, got {port!r}")
    prefix = str(flower.get("url_prefix") or "").strip("/")
    if prefix and not URL_PREFIX.match(prefix):
        errors.append(f"priority_queue_flower_url_prefix {prefix!r} must be a URL path (letters, digits, . _ ~ - /)")
    if memory_bytes(flower.get("memory", "")) in (None, 0):
        errors.append(f"priority_queue_flower_memory must be a size like '256m', got {flower.get('memory')!r}")
    uid = flower.get("uid")
    if isinstance(uid, bool) or not isinstance(uid, int) or uid < 0:
        errors.append(f"priority_queue_flower_uid must be a user id (a whole number), got {uid!r}")
    service = flower.get("service")
    if not isinstance(service, str) or not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", service):
        errors.append(f"priority_queue_flower_service {service!r} is not a valid compose service name")
    elif app_services is not None and service in app_services:
        errors.append(f"priority_queue_flower_service {service!r} is a service of the app's compose files already: "
                      f"name Flower's service otherwise, or remove the app's own")
    return errors


def published_port(bind, port, container_port=5555):
    """A compose ports entry for bind:port (IPv6 addresses in brackets)."""
    address = str(bind)
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return f"{address}:{port}:{container_port}"


class FilterModule:
    def filters(self):
        return {
            "queue_check_errors": queue_check_errors,
            "queue_check_thresholds": queue_check_thresholds,
            "flower_errors": flower_errors,
            "published_port": published_port,
        }
