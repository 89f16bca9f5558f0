# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  broker_url:
    description:
      - The Celery broker URL, as in Celery's C(broker_url).
      - V(redis://[user:password@]host[:port][/db]), V(rediss://...) for TLS, or
        V(sentinel://[user:password@]host:port[;sentinel://host:port...][/db]) for Redis Sentinel,
        with the master name in O(sentinel_master) or C(?master_name=).
      - Redis Cluster cannot be a Celery broker (kombu's C(BRPOP) over several queues fails with CROSSSLOT).
      - Falls back to the E(CELERY_BROKER_URL) environment variable. It may hold a password, so it is never logged.
    type: str
    required: true
  broker_password:
    description:
      - Password for the broker, used instead of one in O(broker_url).
      - Falls back to the E(CELERY_BROKER_PASSWORD) environment variable.
    type: str
  sentinel_master:
    description:
      - Name of the Redis Sentinel master (Celery's C(broker_transport_options.master_name)).
      - Required for V(sentinel://) URLs unless the URL carries C(?master_name=).
    type: str
  broker_key_prefix:
    description:
      - The C(global_keyprefix) of Celery's C(broker_transport_options), if the app sets one.
    type: str
    default: ""
  priority_steps:
    description:
      - kombu's C(priority_steps) (C(broker_transport_options.priority_steps)). Each step has its own Redis list.
    type: list
    elements: int
    default: [0, 3, 6, 9]
  broker_timeout:
    description:
      - Seconds to wait for the broker to connect and answer.
    type: float
    default: 5.0
requirements:
  - redis (Python library, 4.1 or newer)
"""
