#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_column_default
short_description: Give a PostgreSQL column a default and backfill its NULL rows in short batches
version_added: 0.1.0
description:
  - Sets the default of a column to a value, then (with O(backfill=true)) sets that value on every row where the
    column is NULL. This is the runbook's database fix (C(tenant_knowledge.chunk_index) defaults to V(0)), generalised.
  - The default is set first, so rows inserted while the backfill runs already get it.
  - The backfill updates at most O(batch_size) rows per statement, each statement its own transaction, walking the
    table in physical order. No lock is held on the whole table for the whole update, and other sessions keep
    reading and writing it.
  - Every statement runs with O(lock_timeout). When another session holds a conflicting lock for longer, the module
    fails with a message naming the table and the timeout instead of waiting without end. Rows already backfilled stay
    backfilled; running the task again continues from there.
  - Before changing anything the module checks that the table and column exist and that O(default) is a valid value
    of the column's type.
author:
  - pilito developers (@pilito)
extends_documentation_fragment:
  - pilito.priority_queue.postgres
attributes:
  check_mode:
    description: Can run in check mode and return the changed status it predicts without changing the target.
    support: full
    details:
      - Reports the current default, the number of NULL rows and the statements it would run in RV(queries).
      - Reading the table (to count NULL rows) still needs a share lock within O(lock_timeout).
  diff_mode:
    description: Will return details on what has changed (or might have changed in check mode).
    support: full
    details:
      - The diff shows the column's default expression and the number of NULL rows before and after.
  idempotent:
    description: Running the task twice in a row with the same options changes nothing the second time.
    support: full
    details:
      - RV(ignore:changed) is V(true) only when the default expression differs or NULL rows are left to backfill.
options:
  table:
    description:
      - Name of the table, without schema. It is quoted as an identifier, so its case matters.
    type: str
    required: true
  column:
    description:
      - Name of the column in O(table). It is quoted as an identifier, so its case matters.
    type: str
    required: true
  schema:
    description:
      - Schema of O(table).
    type: str
    default: public
  default:
    description:
      - The value the column defaults to and the value NULL rows get.
      - It is sent as a literal and converted by PostgreSQL to the column's type, so V(0), V('0'), V(true) or
        V('2024-01-01') work for integer, text, boolean and date columns alike. Lists and dictionaries are sent
        as JSON text, for C(json) and C(jsonb) columns.
      - It is a value, not an SQL expression; function calls and sequence defaults are not supported.
    type: raw
    required: true
  backfill:
    description:
      - Whether to set O(default) on the rows where the column is NULL.
      - With V(false) only the default changes; existing NULL rows are counted and reported but left alone.
    type: bool
    default: true
  batch_size:
    description:
      - Most rows updated by one backfill statement, that is, by one transaction.
      - Smaller batches hold row locks for less time; larger ones finish sooner.
    type: int
    default: 10000
  lock_timeout:
    description:
      - How long any one statement may wait for a lock before the module fails.
      - An integer is milliseconds, as for PostgreSQL's C(lock_timeout). A string may carry a unit, V(ms), V(s),
        V(min) or V(h), for example V(500ms), V(5s), V(1min).
      - V(0) waits without limit, which can make the task hang behind a long transaction.
    type: raw
    default: 5s
seealso:
  - name: PostgreSQL ALTER TABLE
    description: C(ALTER TABLE ... ALTER COLUMN ... SET DEFAULT) and the lock it takes.
    link: https://www.postgresql.org/docs/15/sql-altertable.html
  - name: PostgreSQL lock_timeout
    description: The setting O(lock_timeout) is applied to.
    link: https://www.postgresql.org/docs/15/runtime-config-client.html#GUC-LOCK-TIMEOUT
notes:
  - C(ALTER TABLE ... SET DEFAULT) needs an C(ACCESS EXCLUSIVE) lock on the table for a moment; it changes only the
    catalog and does not rewrite the table.
  - To compare defaults the module stores O(default) as the default of a column of a temporary table in a transaction
    it rolls back, and reads the expression PostgreSQL made of it. This needs the C(TEMPORARY) privilege on the
    database, which PostgreSQL grants to everyone by default.
  - The backfill walks the table by C(ctid) ranges, which is efficient from PostgreSQL 14 on. With older
    servers it works, but each batch may scan more of the table.
"""

EXAMPLES = r"""
---
- name: Make tenant_knowledge.chunk_index default to 0 and fill its NULL rows
  pilito.priority_queue.pg_column_default:
    table: tenant_knowledge
    column: chunk_index
    default: 0
    login_host: 127.0.0.1
    login_user: "{{ postgres_user }}"
    login_password: "{{ postgres_password }}"
    login_db: "{{ postgres_db }}"
  register: chunk_index_fix

- name: Report how many rows the fix changed
  ansible.builtin.debug:
    msg: "{{ chunk_index_fix.rows_updated }} rows in {{ chunk_index_fix.batches }} batches"

- name: Preview the fix on a busy table, waiting at most 2 s for any lock
  pilito.priority_queue.pg_column_default:
    schema: app
    table: tenant_knowledge
    column: chunk_index
    default: 0
    batch_size: 2000
    lock_timeout: 2s
  check_mode: true
  diff: true
  environment:
    PGHOST: db.internal
    PGUSER: pilito
    PGPASSWORD: "{{ postgres_password }}"
    PGDATABASE: pilito

- name: Change only the default and leave existing NULL rows as they are
  pilito.priority_queue.pg_column_default:
    table: tenant_settings
    column: theme
    default: light
    backfill: false
    login_db: pilito
"""

RETURN = r"""
column_type:
  description: The column's type as PostgreSQL formats it.
  returned: success
  type: str
  sample: integer
default_before:
  description: The column's default expression before the task, or V(null) when it had none.
  returned: success
  type: str
  sample: null
default_after:
  description: The column's default expression after the task (in check mode, the one it would have).
  returned: success
  type: str
  sample: "0"
null_rows_before:
  description: Rows where the column was NULL before the task.
  returned: success
  type: int
  sample: 12873
rows_updated:
  description: Rows the backfill set to O(default). V(0) in check mode; see RV(null_rows_before) for the prediction.
  returned: always
  type: int
  sample: 12873
batches:
  description: Backfill statements run, each one its own transaction.
  returned: always
  type: int
  sample: 3
max_batch_seconds:
  description: Longest time one backfill statement took, that is, the longest any batch held its row locks.
  returned: always
  type: float
  sample: 0.084
queries:
  description:
    - The statements that change the database, run or (in check mode) to be run, with O(default) as a literal.
    - The backfill statement is listed once, with the position it starts from; it runs RV(batches) times, each time
      from where the previous batch ended.
    - Empty when nothing needs to change.
  returned: always
  type: list
  elements: str
  sample:
    - ALTER TABLE "public"."tenant_knowledge" ALTER COLUMN "chunk_index" SET DEFAULT '0'
    - >-
      WITH batch AS (SELECT ctid FROM "public"."tenant_knowledge" WHERE "chunk_index" IS NULL AND ctid > '(0,0)'::tid
      LIMIT 10000), ...
"""

import json
import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_text

from ansible_collections.pilito.priority_queue.plugins.module_utils.postgres import (
    connect,
    ensure_psycopg2,
    postgres_common_argument_spec,
    psycopg2,
    redact,
    sql,
)

# SQLSTATE lock_not_available: raised when lock_timeout expires.
LOCK_NOT_AVAILABLE = "55P03"
START_OF_TABLE = "(0,0)"
# Passes over the table when sessions keep inserting NULL rows behind the backfill; bounded so the task ends.
MAX_BACKFILL_PASSES = 5
PROBE_TABLE = "pilito_column_default_probe"

_LOCK_TIMEOUT_UNITS_MS = {"": 1, "ms": 1, "s": 1000, "min": 60000, "h": 3600000}
_LOCK_TIMEOUT_PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|min|h)?\s*$")
_POSTGRES_MAX_LOCK_TIMEOUT_MS = 2147483647


class ColumnDefaultError(Exception):
    """A failure to report with fail_json, carrying what was already done (rows backfilled before a lock timeout)."""

    def __init__(self, msg, detail=None, **progress):
        super().__init__(msg)
        self.detail = detail or msg
        self.progress = progress


def parse_lock_timeout(value):
    """Milliseconds from an int (already ms) or a string such as '500ms', '5s', '1min'."""
    if isinstance(value, bool):
        raise ValueError("lock_timeout must be milliseconds or a duration such as 5s, not %r" % value)
    if isinstance(value, int):
        milliseconds = value
    else:
        match = _LOCK_TIMEOUT_PATTERN.match(to_text(value))
        if not match:
            raise ValueError("lock_timeout %r is not a duration: use milliseconds (5000) or a number with one of "
                             "the units ms, s, min, h (5s)" % (value,))
        milliseconds = int(match.group(1)) * _LOCK_TIMEOUT_UNITS_MS[match.group(2) or ""]
    if milliseconds < 0 or milliseconds > _POSTGRES_MAX_LOCK_TIMEOUT_MS:
        raise ValueError("lock_timeout %r is out of range (0 to %d ms)" % (value, _POSTGRES_MAX_LOCK_TIMEOUT_MS))
    return milliseconds


def format_lock_timeout(milliseconds):
    if milliseconds and milliseconds % 1000 == 0:
        return "%ds" % (milliseconds // 1000)
    return "%dms" % milliseconds


def default_as_text(value):
    """The literal PostgreSQL converts to the column's type: YAML booleans and numbers as SQL spells them."""
    if value is None:
        raise ValueError("default must be a value; to drop a default use ALTER TABLE ... DROP DEFAULT")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return to_text(value)


def qualified_table(schema, table):
    return sql.Identifier(schema, table)


def build_alter_default(schema, table, column):
    return sql.SQL("ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT %(value)s").format(
        table=qualified_table(schema, table), column=sql.Identifier(column))


def build_backfill_batch(schema, table, column):
    """One batch: the next NULL rows after a ctid position, updated in one statement.

    The CTE is read three times, so PostgreSQL materialises it once and the count, the update and the next position
    all see the same rows. ctid = ANY(ARRAY(...)) makes the update a TID scan instead of a join over the table.
    """
    return sql.SQL(
        "WITH batch AS ("
        "SELECT ctid FROM {table} WHERE {column} IS NULL AND ctid > %(after)s::tid LIMIT %(limit)s"
        "), updated AS ("
        "UPDATE {table} SET {column} = %(value)s "
        "WHERE ctid = ANY(ARRAY(SELECT ctid FROM batch)) AND {column} IS NULL RETURNING 1"
        ") SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM updated), (SELECT max(ctid) FROM batch)"
    ).format(table=qualified_table(schema, table), column=sql.Identifier(column))


class _Session:
    """Runs statements on one autocommit connection and turns lock timeouts into messages naming the table."""

    def __init__(self, connection, target, lock_timeout_ms):
        self.connection = connection
        self.cursor = connection.cursor()
        self.target = target
        self.lock_timeout_ms = lock_timeout_ms

    def render(self, query, params=None):
        return to_text(self.cursor.mogrify(query, params))

    def fetchone(self, query, params=None, doing=None, **progress):
        self.execute(query, params, doing, **progress)
        return self.cursor.fetchone()

    def execute(self, query, params=None, doing=None, **progress):
        try:
            self.cursor.execute(query, params)
        except psycopg2.Error as error:
            detail = _server_message(error)
            if getattr(error, "pgcode", None) == LOCK_NOT_AVAILABLE:
                raise ColumnDefaultError(
                    "could not lock table %s within lock_timeout %s while %s: another session holds a conflicting "
                    "lock; retry when it is done or raise lock_timeout (%s)"
                    % (self.target, format_lock_timeout(self.lock_timeout_ms), doing, detail), detail, **progress)
            raise ColumnDefaultError("%s failed on table %s: %s" % (doing, self.target, detail), detail, **progress)


def _server_message(error):
    """The server's one-line message, without the LINE/caret context psycopg2 appends."""
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None)
    lines = to_text(error).strip().splitlines() or [type(error).__name__]
    return primary or lines[0]


def _column_facts(session, schema, table, column):
    found = session.fetchone(
        "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, table), doing="looking up the table")
    if found is None:
        raise ColumnDefaultError("table %s does not exist (schema %s, table %s)" % (session.target, schema, table))
    facts = session.fetchone(
        "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod), pg_catalog.pg_get_expr(d.adbin, d.adrelid), "
        "a.attidentity, a.attgenerated FROM pg_catalog.pg_attribute a "
        "LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = %s AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (found[0], column), doing="looking up the column")
    if facts is None:
        raise ColumnDefaultError("column %s does not exist in table %s" % (column, session.target))
    column_type, current_default, identity, generated = facts
    if identity or generated:
        raise ColumnDefaultError("column %s of table %s is %s and cannot take a default"
                                 % (column, session.target, "an identity column" if identity else "generated"))
    return column_type, current_default


def _type_sql(column_type):
    """format_type() output is SQL that PostgreSQL wrote itself, identifiers already quoted; only the
    parameter marker character needs escaping before it goes into a statement."""
    return sql.SQL(column_type.replace("%", "%%"))


def _check_value(session, column, column_type, value):
    try:
        session.execute(sql.SQL("SELECT %s::") + _type_sql(column_type), (value,), doing="checking the default")
    except ColumnDefaultError as error:
        raise ColumnDefaultError("default %r is not a valid %s for column %s of table %s: %s"
                                 % (value, column_type, column, session.target, error.detail))


def _normalised_default(session, column_type, value):
    """The expression PostgreSQL would store for this default, to compare with the current one.

    A rolled-back temporary table holds the same default the real column would get, so nothing persists and the
    real table is not locked.
    """
    probe = sql.Identifier("pg_temp", PROBE_TABLE)
    session.execute("BEGIN", doing="preparing the default comparison")
    try:
        create = (sql.SQL("CREATE TEMPORARY TABLE {probe} (probe ").format(probe=probe) + _type_sql(column_type)
                  + sql.SQL(" DEFAULT %s)"))
        session.execute(create, (value,), doing="comparing the default")
        row = session.fetchone(
            "SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d "
            "WHERE d.adrelid = %s::regclass", ("pg_temp." + PROBE_TABLE,), doing="comparing the default")
    finally:
        session.execute("ROLLBACK", doing="ending the default comparison")
    return row[0] if row else None


def _backfill(session, query, remaining, value, batch_size, clock, report):
    """Walk the table in ctid order, batch by batch; rows skipped by concurrent moves get another pass."""
    passes = 0
    while passes < MAX_BACKFILL_PASSES:
        passes += 1
        after = START_OF_TABLE
        pass_updated = 0
        while True:
            started = clock()
            selected, updated, last = session.fetchone(
                query, dict(value=value, after=after, limit=batch_size),
                doing="backfilling a batch of %d rows" % batch_size,
                rows_updated=report["rows_updated"], batches=report["batches"],
                max_batch_seconds=report["max_batch_seconds"])
            elapsed = clock() - started
            report["batches"] += 1
            report["rows_updated"] += updated
            report["max_batch_seconds"] = round(max(report["max_batch_seconds"], elapsed), 6)
            pass_updated += updated
            if selected < batch_size or last is None:
                break
            after = last
        left = session.fetchone(remaining, doing="checking for NULL rows left", rows_updated=report["rows_updated"],
                                batches=report["batches"], max_batch_seconds=report["max_batch_seconds"])[0]
        if not left or pass_updated == 0:
            return not left
    return False


def set_column_default(connection, schema, table, column, value, backfill=True, batch_size=10000,
                       lock_timeout_ms=5000, check_mode=False, clock=time.monotonic):
    """Everything the module does with the database, callable without AnsibleModule (tests, benchmark)."""
    target = "%s.%s" % (schema, table)
    session = _Session(connection, target, lock_timeout_ms)
    session.execute("SET lock_timeout = %s", (lock_timeout_ms,), doing="setting lock_timeout")

    column_type, default_before = _column_facts(session, schema, table, column)
    _check_value(session, column, column_type, value)
    default_wanted = _normalised_default(session, column_type, value)
    null_rows = session.fetchone(
        sql.SQL("SELECT count(*) FROM {table} WHERE {column} IS NULL").format(
            table=qualified_table(schema, table), column=sql.Identifier(column)),
        doing="counting NULL rows")[0]

    alter = build_alter_default(schema, table, column)
    batch = build_backfill_batch(schema, table, column)
    default_changes = default_wanted != default_before
    needs_backfill = bool(backfill and null_rows)
    queries = []
    if default_changes:
        queries.append(session.render(alter, dict(value=value)))
    if needs_backfill:
        queries.append(session.render(batch, dict(value=value, after=START_OF_TABLE, limit=batch_size)))

    report = dict(changed=default_changes or needs_backfill, column_type=column_type, default_before=default_before,
                  default_after=default_wanted, null_rows_before=null_rows, rows_updated=0, batches=0,
                  max_batch_seconds=0.0, queries=queries, warnings=[])
    if check_mode:
        return report

    # Default first: rows inserted during the backfill already get it.
    if default_changes:
        session.execute(alter, dict(value=value), doing="setting the default", queries=queries)
        report["default_after"] = _column_facts(session, schema, table, column)[1]
    if needs_backfill:
        remaining = sql.SQL("SELECT EXISTS (SELECT 1 FROM {table} WHERE {column} IS NULL)").format(
            table=qualified_table(schema, table), column=sql.Identifier(column))
        try:
            finished = _backfill(session, batch, remaining, value, batch_size, clock, report)
        except ColumnDefaultError as error:
            error.progress.update(queries=queries, default_after=report["default_after"],
                                  null_rows_before=null_rows, changed=error.progress["rows_updated"] > 0 or default_changes)
            raise
        if not finished:
            report["warnings"].append(
                "rows with NULL in %s of table %s are still being inserted; %d rows were backfilled, some remain"
                % (column, target, report["rows_updated"]))
    return report


def main():
    argument_spec = postgres_common_argument_spec()
    argument_spec.update(
        table=dict(type="str", required=True),
        column=dict(type="str", required=True),
        schema=dict(type="str", default="public"),
        default=dict(type="raw", required=True),
        backfill=dict(type="bool", default=True),
        batch_size=dict(type="int", default=10000),
        lock_timeout=dict(type="raw", default="5s"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params

    try:
        lock_timeout_ms = parse_lock_timeout(params["lock_timeout"])
        value = default_as_text(params["default"])
    except ValueError as error:
        module.fail_json(msg=to_text(error))
    if params["batch_size"] < 1:
        module.fail_json(msg="batch_size must be at least 1, got %d" % params["batch_size"])

    ensure_psycopg2(module)
    connection = connect(module)
    try:
        result = set_column_default(
            connection, params["schema"], params["table"], params["column"], value,
            backfill=params["backfill"], batch_size=params["batch_size"], lock_timeout_ms=lock_timeout_ms,
            check_mode=module.check_mode)
    except ColumnDefaultError as error:
        progress = dict(error.progress)
        progress.setdefault("changed", False)
        module.fail_json(msg=redact(error, params), **progress)
    finally:
        connection.close()

    for warning in result.pop("warnings"):
        module.warn(warning)
    if module._diff:
        result["diff"] = dict(
            before=dict(default=result["default_before"], null_rows=result["null_rows_before"]),
            after=dict(default=result["default_after"],
                       null_rows=0 if params["backfill"] else result["null_rows_before"]),
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
