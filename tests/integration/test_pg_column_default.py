"""pg_column_default against a real PostgreSQL 15, run through ansible-playbook."""

import math
import socket
import threading
import time
import uuid

import pytest

from conftest import run_module


@pytest.fixture
def db(postgres_server):
    connection = postgres_server.connect()
    connection.autocommit = True
    yield connection
    connection.close()


@pytest.fixture
def table(db):
    """A fresh table per test: `nulls` rows with chunk_index NULL, then 5 rows that already have 7."""
    name = f"knowledge_{uuid.uuid4().hex[:10]}"

    def make(nulls=30):
        with db.cursor() as cur:
            cur.execute(f'CREATE TABLE "{name}" (id serial PRIMARY KEY, body text, chunk_index integer)')
            cur.execute(f'INSERT INTO "{name}" (body) SELECT \'row \' || n FROM generate_series(1, %s) n', (nulls,))
            cur.execute(f'INSERT INTO "{name}" (body, chunk_index) SELECT \'set\', 7 FROM generate_series(1, 5)')
        return name

    yield make
    with db.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS "{name}"')


def conn_args(server, **extra):
    return dict(login_host=server.host, login_port=server.port, login_user=server.user,
                login_password=server.password, login_db=server.database, **extra)


def fetch(db, query, *params):
    with db.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()


def column_state(db, name, column="chunk_index"):
    """(default expression, NULL rows, rows holding 7) as the server sees them."""
    default = fetch(db, "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
                        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                        "WHERE a.attrelid = %s::regclass AND a.attname = %s", f'"{name}"', column)[0]
    nulls = fetch(db, f'SELECT count(*) FROM "{name}" WHERE {column} IS NULL')[0]
    sevens = fetch(db, f'SELECT count(*) FROM "{name}" WHERE {column} = 7')[0]
    return default, nulls, sevens


def assert_ok(result):
    assert not result.get("failed"), result.get("msg", result)


def test_first_run_sets_default_and_backfills_second_run_changes_nothing(postgres_server, db, table):
    name = table(nulls=30)
    args = conn_args(postgres_server, table=name, column="chunk_index", default=0)

    first = run_module("pg_column_default", args)
    assert_ok(first)
    assert first["changed"] is True
    assert (first["rows_updated"], first["null_rows_before"]) == (30, 30)
    assert (first["default_before"], first["default_after"], first["column_type"]) == (None, "0", "integer")
    assert first["queries"][0] == f'ALTER TABLE "public"."{name}" ALTER COLUMN "chunk_index" SET DEFAULT \'0\''
    assert f'UPDATE "public"."{name}" SET "chunk_index" = \'0\'' in first["queries"][1]
    assert column_state(db, name) == ("0", 0, 5)
    with db.cursor() as cur:  # new rows get the default
        cur.execute(f'INSERT INTO "{name}" (body) VALUES (\'new\') RETURNING chunk_index')
        assert cur.fetchone()[0] == 0

    second = run_module("pg_column_default", args)
    assert_ok(second)
    assert second["changed"] is False
    assert (second["rows_updated"], second["null_rows_before"], second["batches"]) == (0, 0, 0)
    assert second["queries"] == []
    assert second["default_before"] == second["default_after"] == "0"


def test_check_mode_reports_and_changes_nothing(postgres_server, db, table):
    name = table(nulls=12)
    before = column_state(db, name)
    result = run_module("pg_column_default", conn_args(postgres_server, table=name, column="chunk_index", default=0),
                        check=True, diff=True)
    assert_ok(result)
    assert result["changed"] is True
    assert result["null_rows_before"] == 12
    assert (result["rows_updated"], result["batches"]) == (0, 0)
    assert (result["default_before"], result["default_after"]) == (None, "0")
    assert len(result["queries"]) == 2 and "SET DEFAULT '0'" in result["queries"][0]
    assert result["diff"] == dict(before=dict(default=None, null_rows=12), after=dict(default="0", null_rows=0))
    assert column_state(db, name) == before == (None, 12, 5)
    # the probe table lived only in the rolled-back transaction of the module's own session
    assert fetch(db, "SELECT count(*) FROM pg_class WHERE relname = 'pilito_column_default_probe'")[0] == 0


def test_diff_shows_default_and_null_rows_before_and_after(postgres_server, db, table):
    name = table(nulls=3)
    with db.cursor() as cur:
        cur.execute(f'ALTER TABLE "{name}" ALTER COLUMN chunk_index SET DEFAULT 5')
    result = run_module("pg_column_default", conn_args(postgres_server, table=name, column="chunk_index", default="0"),
                        diff=True)
    assert_ok(result)
    assert result["diff"] == dict(before=dict(default="5", null_rows=3), after=dict(default="0", null_rows=0))
    assert column_state(db, name) == ("0", 0, 5)


def test_only_a_different_default_is_a_change(postgres_server, db, table):
    name = table(nulls=0)
    with db.cursor() as cur:
        cur.execute(f'ALTER TABLE "{name}" ALTER COLUMN chunk_index SET DEFAULT 5')
    args = conn_args(postgres_server, table=name, column="chunk_index", default=0)
    result = run_module("pg_column_default", args)
    assert_ok(result)
    assert result["changed"] is True
    assert (result["default_before"], result["default_after"], result["rows_updated"]) == ("5", "0", 0)
    assert len(result["queries"]) == 1 and result["queries"][0].startswith("ALTER TABLE")
    # the same value spelled differently is the same default
    assert run_module("pg_column_default", dict(args, default="00"))["changed"] is False


def test_backfill_runs_in_batches_each_its_own_transaction(postgres_server, db, table):
    name = table(nulls=95)
    result = run_module("pg_column_default", conn_args(postgres_server, table=name, column="chunk_index", default=0,
                                                       batch_size=10))
    assert_ok(result)
    assert result["rows_updated"] == 95
    assert result["batches"] == math.ceil(95 / 10)
    assert 0 < result["max_batch_seconds"] < 5
    # every batch committed on its own: the backfilled rows carry one transaction id per batch
    assert fetch(db, f'SELECT count(DISTINCT xmin::text) FROM "{name}" WHERE body <> \'set\'')[0] == 10
    assert column_state(db, name) == ("0", 0, 5)


def test_backfill_false_sets_only_the_default(postgres_server, db, table):
    name = table(nulls=4)
    args = conn_args(postgres_server, table=name, column="chunk_index", default=0, backfill=False)
    first = run_module("pg_column_default", args)
    assert_ok(first)
    assert (first["changed"], first["rows_updated"], first["null_rows_before"]) == (True, 0, 4)
    assert column_state(db, name) == ("0", 4, 5)
    second = run_module("pg_column_default", args)
    assert (second["changed"], second["null_rows_before"]) == (False, 4)


def test_table_locked_by_another_session_fails_within_lock_timeout(postgres_server, db, table):
    name = table(nulls=10)
    holder = postgres_server.connect()  # a transaction that keeps the table locked until rollback
    try:
        with holder.cursor() as cur:
            cur.execute(f'LOCK TABLE "{name}" IN ACCESS EXCLUSIVE MODE')
        started = time.monotonic()
        result = run_module("pg_column_default", conn_args(postgres_server, table=name, column="chunk_index",
                                                           default=0, lock_timeout="1s"), timeout=120)
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert result.get("failed") is True
    assert f"could not lock table public.{name} within lock_timeout 1s" in result["msg"]
    assert elapsed < 30
    assert result["changed"] is False
    assert column_state(db, name) == (None, 10, 5)


def test_row_locked_mid_backfill_fails_and_reports_the_rows_already_done(postgres_server, db, table):
    name = table(nulls=100)
    with db.cursor() as cur:  # already set: a row lock also blocks ALTER TABLE, and this test is about the backfill
        cur.execute(f'ALTER TABLE "{name}" ALTER COLUMN chunk_index SET DEFAULT 0')
    holder = postgres_server.connect()
    try:
        with holder.cursor() as cur:  # the 45th NULL row is locked, so the 5th batch of 10 has to wait for it
            cur.execute(f'SELECT id FROM "{name}" WHERE id = 45 FOR UPDATE')
        result = run_module("pg_column_default", conn_args(postgres_server, table=name, column="chunk_index",
                                                           default=0, batch_size=10, lock_timeout=500))
    finally:
        holder.rollback()
        holder.close()
    assert result.get("failed") is True
    assert f"table public.{name} within lock_timeout 500ms while backfilling" in result["msg"]
    assert (result["changed"], result["rows_updated"], result["batches"]) == (True, 40, 4)
    assert column_state(db, name) == ("0", 60, 5)
    # running again finishes the job
    again = run_module("pg_column_default", conn_args(postgres_server, table=name, column="chunk_index", default=0,
                                                      batch_size=10))
    assert_ok(again)
    assert (again["changed"], again["rows_updated"], again["null_rows_before"]) == (True, 60, 60)
    assert column_state(db, name) == ("0", 0, 5)


def test_rows_inserted_during_the_backfill_get_the_default(postgres_server, db, table):
    name = table(nulls=20000)
    writer = postgres_server.connect()
    writer.autocommit = True
    stop = threading.Event()
    inserted = []

    def insert_rows():
        with writer.cursor() as cur:
            while not stop.is_set():
                cur.execute(f'INSERT INTO "{name}" (body) VALUES (\'during\') RETURNING chunk_index')
                inserted.append(cur.fetchone()[0])

    thread = threading.Thread(target=insert_rows)
    thread.start()
    try:
        result = run_module("pg_column_default", conn_args(postgres_server, table=name, column="chunk_index",
                                                           default=0, batch_size=500))
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert_ok(result)
    # rows the writer added before the default was set are NULL too, and backfilled as well
    assert result["rows_updated"] >= 20000
    assert column_state(db, name)[1] == 0
    assert inserted and set(inserted[-10:]) == {0}


@pytest.mark.parametrize("change, expected", [
    (dict(table="no_such_table"), "table public.no_such_table does not exist"),
    (dict(schema="no_such_schema"), "table no_such_schema.{name} does not exist"),
    (dict(column="no_such_column"), "column no_such_column does not exist in table public.{name}"),
    (dict(default="abc"), "default 'abc' is not a valid integer for column chunk_index of table public.{name}: "
                          "invalid input syntax for type integer"),
    (dict(lock_timeout="soon"), "lock_timeout 'soon' is not a duration"),
    (dict(batch_size=0), "batch_size must be at least 1"),
])
def test_bad_input_fails_with_a_message_naming_it_and_changes_nothing(postgres_server, db, table, change, expected):
    name = table(nulls=3)
    args = conn_args(postgres_server, table=name, column="chunk_index", default=0)
    args.update(change)
    result = run_module("pg_column_default", args)
    assert result.get("failed") is True
    assert expected.format(name=name) in result["msg"]
    assert column_state(db, name) == (None, 3, 5)


def test_wrong_password_is_a_login_failure_and_never_shown(postgres_server):
    wrong = "Wr0ng-" + uuid.uuid4().hex
    args = conn_args(postgres_server, table="tenant_knowledge", column="chunk_index", default=0)
    args["login_password"] = wrong
    result = run_module("pg_column_default", args)
    assert result.get("failed") is True
    assert result["msg"].startswith(f"login failed for user {postgres_server.user} on PostgreSQL at "
                                    f"{postgres_server.host} port {postgres_server.port}")
    assert "password authentication failed" in result["msg"]
    assert wrong not in result["_raw_output"]
    assert postgres_server.password not in result["_raw_output"]


def test_unreachable_server_says_so(postgres_server):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    args = conn_args(postgres_server, table="tenant_knowledge", column="chunk_index", default=0,
                     connect_timeout=3)
    args["login_port"] = closed_port
    started = time.monotonic()
    result = run_module("pg_column_default", args)
    assert result.get("failed") is True
    assert result["msg"].startswith(f"cannot reach PostgreSQL at 127.0.0.1 port {closed_port}")
    assert time.monotonic() - started < 60
    assert postgres_server.password not in result["_raw_output"]


def test_connection_options_fall_back_to_pg_environment(postgres_server, db, table, monkeypatch):
    name = table(nulls=2)
    for variable, value in dict(PGHOST=postgres_server.host, PGPORT=str(postgres_server.port),
                                PGUSER=postgres_server.user, PGPASSWORD=postgres_server.password,
                                PGDATABASE=postgres_server.database).items():
        monkeypatch.setenv(variable, value)
    result = run_module("pg_column_default", dict(table=name, column="chunk_index", default=0))
    assert_ok(result)
    assert result["rows_updated"] == 2
    assert column_state(db, name) == ("0", 0, 5)
