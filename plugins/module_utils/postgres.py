# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Connection options and the connect helper shared by the collection's PostgreSQL modules.

Documented once in the doc fragment C(pilito.priority_queue.postgres); keep the two in step.
Names starting with C(_) are private to this collection.
"""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import env_fallback, missing_required_lib

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:
    # The module must still load so that it can say what is missing on the target.
    psycopg2 = None
    sql = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None

__all__ = [
    "HAS_PSYCOPG2", "PSYCOPG2_IMPORT_ERROR", "REDACTED", "connect", "ensure_psycopg2", "postgres_common_argument_spec",
    "psycopg2", "redact", "sql",
]

REDACTED = "********"

# libpq puts no SQLSTATE on a failed connection, so the reason is read from its message.
_LOGIN_FAILURE_MARKERS = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "fe_sendauth",
    "pg_hba.conf",
)
_MISSING_DATABASE_MARKER = "does not exist"


def postgres_common_argument_spec():
    """The connection options every PostgreSQL module of the collection takes."""
    return dict(
        login_host=dict(type="str", fallback=(env_fallback, ["PGHOST"])),
        login_port=dict(type="int", default=5432, fallback=(env_fallback, ["PGPORT"])),
        login_user=dict(type="str", default="postgres", fallback=(env_fallback, ["PGUSER"])),
        login_password=dict(type="str", no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
        login_db=dict(type="str", fallback=(env_fallback, ["PGDATABASE"])),
        connect_timeout=dict(type="int", default=10),
    )


def ensure_psycopg2(module):
    """Fail with install advice, only once a module really needs the driver."""
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMPORT_ERROR)


def redact(text, params):
    """Driver and server messages may echo connection strings; the password never leaves the module."""
    text = str(text)
    password = params.get("login_password")
    if password:
        text = text.replace(password, REDACTED)
    return text


def _connect_kwargs(params):
    kwargs = dict(
        host=params.get("login_host"),
        port=params.get("login_port"),
        user=params.get("login_user"),
        password=params.get("login_password"),
        dbname=params.get("login_db"),
        connect_timeout=params.get("connect_timeout"),
        application_name="ansible-pilito.priority_queue",
    )
    # Unset options are left to libpq, which then uses its own defaults (local socket, user name).
    return {key: value for key, value in kwargs.items() if value not in (None, "")}


def _server_label(params):
    host = params.get("login_host") or "the local socket"
    return "%s port %s" % (host, params.get("login_port"))


def _describe_connect_error(error, params):
    """Turn libpq's multi-line text into one sentence that says which of the usual causes it is."""
    detail = " ".join(redact(error, params).split())
    lowered = detail.lower()
    where = _server_label(params)
    if any(marker in lowered for marker in _LOGIN_FAILURE_MARKERS):
        return "login failed for user %s on PostgreSQL at %s: %s" % (params.get("login_user"), where, detail)
    if 'database "' in lowered and _MISSING_DATABASE_MARKER in lowered:
        return "database %s does not exist on PostgreSQL at %s: %s" % (params.get("login_db"), where, detail)
    if 'role "' in lowered and _MISSING_DATABASE_MARKER in lowered:
        return "login failed for user %s on PostgreSQL at %s: %s" % (params.get("login_user"), where, detail)
    return "cannot reach PostgreSQL at %s (connect_timeout %ss): %s" % (where, params.get("connect_timeout"), detail)


def connect(module, autocommit=True):
    """Open a connection or fail with a message that names the server and the cause, never the password.

    Autocommit is the default so that each statement is its own short transaction.
    """
    ensure_psycopg2(module)
    try:
        connection = psycopg2.connect(**_connect_kwargs(module.params))
    except psycopg2.Error as error:
        module.fail_json(msg=_describe_connect_error(error, module.params))
    connection.autocommit = autocommit
    return connection
