# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # The connection options of plugins/module_utils/postgres.py postgres_common_argument_spec().
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name or IP address of the PostgreSQL server, as seen from the host the module runs on.
      - When neither this nor E(PGHOST) is set, libpq connects through its default local Unix socket.
      - Falls back to the environment variable E(PGHOST) of the host the module runs on.
    type: str
  login_port:
    description:
      - TCP port of the PostgreSQL server.
      - Falls back to the environment variable E(PGPORT).
    type: int
    default: 5432
  login_user:
    description:
      - Role to log in as.
      - Falls back to the environment variable E(PGUSER).
    type: str
    default: postgres
  login_password:
    description:
      - Password of O(login_user). It is never written to the module's output or error messages.
      - Falls back to the environment variable E(PGPASSWORD).
    type: str
  login_db:
    description:
      - Database to connect to.
      - Falls back to the environment variable E(PGDATABASE); when neither is set libpq uses the role's name.
    type: str
  connect_timeout:
    description:
      - Seconds to wait for the connection to be established before failing with a message that the server
        cannot be reached. libpq treats values below V(2) as V(2).
    type: int
    default: 10
requirements:
  - psycopg2 (or psycopg2-binary) on the host the module runs on
notes:
  - The module runs where the task runs. Set O(login_host) to reach a server elsewhere, for example
    the published port of a database container.
"""
