"""pg_column_default without a server: its pure parts, and whole-module runs on a fake connection that
simulates one table, so check mode, idempotency, batching and error messages are pinned down."""

import contextlib
import json
import math

import psycopg2
import pytest
import yaml
from psycopg2 import sql

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pilito.priority_queue.plugins.doc_fragments import postgres as postgres_fragment
from ansible_collections.pilito.priority_queue.plugins.module_utils import postgres as postgres_utils
from ansible_collections.pilito.priority_queue.plugins.modules import pg_column_default

from .conftest import ModuleExit, ModuleFail

SECRET = "s3cret-Pa55word"


@contextlib.contextmanager
def set_module_args(args):
    with patch_module_args(args):
        yield


@pytest.fixture(autouse=True)
def exits_raise(monkeypatch):
    def exit_json(self, **result):
        raise ModuleExit(result)

    def fail_json(self, msg, **result):
        raise ModuleFail(dict(result, msg=msg, failed=True))

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)


class LockTimeout(psycopg2.OperationalError):
    pgcode = "55P03"


class InvalidText(psycopg2.DataError):
    pgcode = "22P02"


def render(query, params=None):
    """What mogrify would produce, without a server: identifiers quoted, strings as literals."""
    def compose(part):
        if isinstance(part, sql.Composed):
            return "".join(compose(p) for p in part.seq)
        if isinstance(part, sql.SQL):
            return part.string
        if isinstance(part, sql.Identifier):
            return ".".join('"%s"' % s.replace('"', '""') for s in part.strings)
        raise TypeError(part)

    def literal(value):
        return str(value) if isinstance(value, int) else "'%s'" % str(value).replace("'", "''")

    text = compose(query) if isinstance(query, sql.Composable) else query
    if params is None:
        return text
    if isinstance(params, dict):
        return text % {key: literal(value) for key, value in params.items()}
    return text % tuple(literal(value) for value in params)


class FakeTable:
    """One integer column `chunk_index` of public.tenant_knowledge, answering the module's statements."""

    def __init__(self, nulls=25, default=None, column_type="integer", lock_on=None):
        self.nulls = nulls
        self.default = default
        self.column_type = column_type
        self.lock_on = lock_on  # a statement prefix that fails with a lock timeout
        self.executed = []
        self.batches_seen = 0


class FakeCursor:
    def __init__(self, table):
        self.table = table
        self.row = None
        self.probe = None

    def mogrify(self, query, params=None):
        return render(query, params).encode()

    def execute(self, query, params=None):
        text = render(query, params)
        table = self.table
        table.executed.append(text)
        if table.lock_on and text.startswith(table.lock_on):
            raise LockTimeout("canceling statement due to lock timeout")
        self.row = None
        if "FROM pg_catalog.pg_class" in text:
            self.row = (16384,) if "'tenant_knowledge'" in text and "'public'" in text else None
        elif "FROM pg_catalog.pg_attribute" in text:
            self.row = (table.column_type, table.default, "", "") if "'chunk_index'" in text else None
        elif text.startswith("SELECT '") and "::" in text:
            value = params[0]
            if table.column_type == "integer" and not value.lstrip("-").isdigit():
                raise InvalidText('invalid input syntax for type integer: "%s"\nLINE 1: SELECT ...' % value)
        elif text.startswith("CREATE TEMPORARY TABLE"):
            self.probe = params[0]
        elif "FROM pg_catalog.pg_attrdef" in text:
            self.row = (str(int(self.probe)),)
        elif text.startswith("SELECT count(*)"):
            self.row = (table.nulls,)
        elif text.startswith("ALTER TABLE"):
            table.default = str(int(params["value"]))
        elif text.startswith("WITH batch AS"):
            table.batches_seen += 1
            selected = min(params["limit"], table.nulls)
            table.nulls -= selected
            self.row = (selected, selected, "(%d,1)" % table.batches_seen if selected else None)
        elif text.startswith("SELECT EXISTS"):
            self.row = (table.nulls > 0,)

    def fetchone(self):
        return self.row


class FakeConnection:
    def __init__(self, table):
        self.table = table
        self.closed = False

    def cursor(self):
        return FakeCursor(self.table)

    def close(self):
        self.closed = True


def run(monkeypatch, fake_table, check=False, diff=False, **overrides):
    connection = FakeConnection(fake_table)
    monkeypatch.setattr(pg_column_default, "connect", lambda module: connection)
    args = dict(table="tenant_knowledge", column="chunk_index", default=0, login_password=SECRET,
                _ansible_check_mode=check, _ansible_diff=diff)
    args.update(overrides)
    with set_module_args(args):
        with pytest.raises(ModuleExit) as raised:
            pg_column_default.main()
    assert connection.closed or isinstance(raised.value, ModuleFail)
    return raised.value


def mutations(table):
    return [text for text in table.executed if text.startswith(("ALTER TABLE", "WITH batch", "UPDATE"))]


# --- pure parts ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, milliseconds", [
    (5000, 5000), ("5000", 5000), ("500ms", 500), ("5s", 5000), (" 2 s ", 2000), ("1min", 60000),
    ("1h", 3600000), (0, 0),
])
def test_lock_timeout_accepts_milliseconds_and_units(value, milliseconds):
    assert pg_column_default.parse_lock_timeout(value) == milliseconds


@pytest.mark.parametrize("value", ["soon", "5 seconds", "-1", -1, "1.5s", True, "", 2 ** 31])
def test_lock_timeout_rejects_what_postgresql_would_not_take(value):
    with pytest.raises(ValueError, match="lock_timeout"):
        pg_column_default.parse_lock_timeout(value)


@pytest.mark.parametrize("milliseconds, text", [(5000, "5s"), (500, "500ms"), (1500, "1500ms"), (0, "0ms")])
def test_lock_timeout_is_reported_as_it_reads(milliseconds, text):
    assert pg_column_default.format_lock_timeout(milliseconds) == text


@pytest.mark.parametrize("value, text", [
    (0, "0"), ("0", "0"), (True, "true"), (False, "false"), (1.5, "1.5"), ("light", "light"),
    ({"b": 1, "a": [1, 2]}, '{"a": [1, 2], "b": 1}'), ([1, 2], "[1, 2]"),
])
def test_default_is_sent_as_postgresql_spells_it(value, text):
    assert pg_column_default.default_as_text(value) == text


def test_no_default_value_is_an_error():
    with pytest.raises(ValueError, match="DROP DEFAULT"):
        pg_column_default.default_as_text(None)


def test_statements_quote_identifiers_and_keep_the_value_a_parameter():
    batch = render(pg_column_default.build_backfill_batch("app", 'odd"name', "chunk_index"),
                   dict(value="x'; DROP TABLE t; --", after="(0,0)", limit=10))
    assert 'FROM "app"."odd""name" WHERE "chunk_index" IS NULL' in batch
    assert "SET \"chunk_index\" = 'x''; DROP TABLE t; --'" in batch
    assert "ctid > '(0,0)'::tid LIMIT 10" in batch
    alter = render(pg_column_default.build_alter_default("public", "t", "c"), dict(value="0"))
    assert alter == 'ALTER TABLE "public"."t" ALTER COLUMN "c" SET DEFAULT \'0\''


def test_documentation_matches_the_argument_spec():
    docs = yaml.safe_load(pg_column_default.DOCUMENTATION)["options"]
    docs.update(yaml.safe_load(postgres_fragment.ModuleDocFragment.DOCUMENTATION)["options"])
    spec = postgres_utils.postgres_common_argument_spec()
    spec.update(table=dict(type="str", required=True), column=dict(type="str", required=True),
                schema=dict(type="str", default="public"), default=dict(type="raw", required=True),
                backfill=dict(type="bool", default=True), batch_size=dict(type="int", default=10000),
                lock_timeout=dict(type="raw", default="5s"))
    assert sorted(docs) == sorted(spec)
    for name, option in spec.items():
        assert docs[name]["type"] == option["type"], name
        assert docs[name].get("default") == option.get("default"), name
        assert docs[name].get("required", False) == option.get("required", False), name
    assert spec["login_password"]["no_log"] is True


# --- whole module on a fake connection ----------------------------------------------------------------------

def test_check_mode_reports_what_would_change_and_runs_no_mutation(monkeypatch):
    table = FakeTable(nulls=25)
    result = run(monkeypatch, table, check=True, diff=True).result
    assert result["changed"] is True
    assert (result["null_rows_before"], result["default_before"], result["default_after"]) == (25, None, "0")
    assert (result["rows_updated"], result["batches"]) == (0, 0)
    assert result["queries"][0] == 'ALTER TABLE "public"."tenant_knowledge" ALTER COLUMN "chunk_index" SET DEFAULT \'0\''
    assert result["queries"][1].startswith("WITH batch AS")
    assert result["diff"] == dict(before=dict(default=None, null_rows=25), after=dict(default="0", null_rows=0))
    assert mutations(table) == []
    assert (table.default, table.nulls) == (None, 25)
    assert "ROLLBACK" in table.executed  # the comparison probe never commits


def test_run_sets_default_first_then_backfills_in_batches(monkeypatch):
    table = FakeTable(nulls=25)
    result = run(monkeypatch, table, batch_size=10).result
    assert result["changed"] is True
    assert (result["rows_updated"], result["batches"]) == (25, math.ceil(25 / 10))
    assert result["max_batch_seconds"] >= 0
    done = mutations(table)
    assert done[0].startswith("ALTER TABLE") and all(text.startswith("WITH batch") for text in done[1:])
    assert len(done) == 1 + 3
    assert (table.default, table.nulls) == ("0", 0)
    assert "diff" not in result


def test_second_run_changes_nothing(monkeypatch):
    table = FakeTable(nulls=0, default="0")
    result = run(monkeypatch, table).result
    assert result["changed"] is False
    assert result["queries"] == [] and mutations(table) == []


def test_lock_timeout_is_set_before_anything_else(monkeypatch):
    table = FakeTable(nulls=1)
    run(monkeypatch, table, lock_timeout="2s")
    assert table.executed[0] == "SET lock_timeout = 2000"


def test_backfill_false_leaves_null_rows(monkeypatch):
    table = FakeTable(nulls=4)
    result = run(monkeypatch, table, backfill=False, diff=True).result
    assert (result["changed"], result["rows_updated"], result["null_rows_before"]) == (True, 0, 4)
    assert result["diff"]["after"] == dict(default="0", null_rows=4)
    assert len(result["queries"]) == 1 and table.nulls == 4


@pytest.mark.parametrize("overrides, message", [
    (dict(table="missing"), "table public.missing does not exist"),
    (dict(column="missing"), "column missing does not exist in table public.tenant_knowledge"),
    (dict(default="abc"), "default 'abc' is not a valid integer for column chunk_index of table "
                          "public.tenant_knowledge: invalid input syntax for type integer: \"abc\""),
    (dict(batch_size=0), "batch_size must be at least 1"),
    (dict(lock_timeout="later"), "lock_timeout 'later' is not a duration"),
])
def test_errors_name_what_is_wrong_and_change_nothing(monkeypatch, overrides, message):
    table = FakeTable(nulls=3)
    result = run(monkeypatch, table, **overrides).result
    assert result["failed"] is True
    assert message in result["msg"]
    assert "LINE 1" not in result["msg"]
    assert mutations(table) == [] and table.nulls == 3


def test_lock_timeout_names_the_table_and_the_timeout(monkeypatch):
    table = FakeTable(nulls=3, lock_on="ALTER TABLE")
    result = run(monkeypatch, table, lock_timeout=1500).result
    assert result["failed"] is True
    assert result["msg"].startswith("could not lock table public.tenant_knowledge within lock_timeout 1500ms "
                                    "while setting the default")
    assert result["changed"] is False
    assert table.nulls == 3


def test_lock_timeout_mid_backfill_reports_the_rows_already_done(monkeypatch):
    table = FakeTable(nulls=30, default="0")
    original = FakeCursor.execute

    def execute(self, query, params=None):
        if self.table.batches_seen == 1:
            self.table.lock_on = "WITH batch"
        return original(self, query, params)

    monkeypatch.setattr(FakeCursor, "execute", execute)
    result = run(monkeypatch, table, batch_size=10).result
    assert result["failed"] is True
    assert "while backfilling a batch of 10 rows" in result["msg"]
    assert (result["changed"], result["rows_updated"], result["batches"]) == (True, 10, 1)


def test_missing_psycopg2_says_what_to_install(monkeypatch):
    monkeypatch.setattr(postgres_utils, "HAS_PSYCOPG2", False)
    monkeypatch.setattr(postgres_utils, "PSYCOPG2_IMPORT_ERROR", "ModuleNotFoundError: No module named 'psycopg2'")
    result = run(monkeypatch, FakeTable()).result
    assert result["failed"] is True
    assert "Failed to import the required Python library (psycopg2)" in result["msg"]


def test_password_never_appears_in_a_failure(monkeypatch):
    def refuse(**kwargs):
        raise psycopg2.OperationalError('connection to server at "db" failed: FATAL:  password authentication '
                                        'failed for user "pilito" (password=%s)' % kwargs["password"])

    monkeypatch.setattr(postgres_utils.psycopg2, "connect", refuse)
    args = dict(table="t", column="c", default=0, login_host="db", login_user="pilito", login_password=SECRET)
    with set_module_args(args):
        with pytest.raises(ModuleFail) as raised:
            pg_column_default.main()
    result = raised.value.result
    assert result["msg"].startswith("login failed for user pilito on PostgreSQL at db port 5432")
    assert SECRET not in json.dumps(result)


def test_one_pass_walks_the_whole_table_batch_after_batch(monkeypatch):
    table = FakeTable(nulls=120)
    result = run(monkeypatch, table, batch_size=10).result
    # 12 full batches, then one that finds nothing left and ends the pass
    assert (result["rows_updated"], result["batches"]) == (120, 13)
    batches = [text for text in table.executed if text.startswith("WITH batch")]
    # each batch starts where the previous one ended, and the table is checked for NULL rows once at the end
    assert [text.split("ctid > ")[1].split("::tid")[0] for text in batches[:3]] == ["'(0,0)'", "'(1,1)'", "'(2,1)'"]
    assert sum(text.startswith("SELECT EXISTS") for text in table.executed) == 1
    assert "warnings" not in result
