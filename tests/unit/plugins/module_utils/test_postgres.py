"""The shared PostgreSQL connection helpers: argument spec, connect errors, password redaction."""

import psycopg2
import pytest

from ansible_collections.pilito.priority_queue.plugins.module_utils import postgres

SECRET = "Pa55-w0rd-xyz"
PARAMS = dict(login_host="db.internal", login_port=5433, login_user="pilito", login_password=SECRET,
              login_db="pilito", connect_timeout=3)


class FailCalled(Exception):
    pass


class FakeModule:
    def __init__(self, params):
        self.params = params

    def fail_json(self, msg, **kwargs):
        raise FailCalled(msg)


def test_argument_spec_hides_the_password_and_reads_the_pg_environment():
    spec = postgres.postgres_common_argument_spec()
    assert spec["login_password"]["no_log"] is True
    assert {name: option["fallback"][1] for name, option in spec.items() if "fallback" in option} == dict(
        login_host=["PGHOST"], login_port=["PGPORT"], login_user=["PGUSER"], login_password=["PGPASSWORD"],
        login_db=["PGDATABASE"])
    assert (spec["login_port"]["default"], spec["connect_timeout"]["default"]) == (5432, 10)


def test_unset_options_are_left_to_libpq():
    kwargs = postgres._connect_kwargs(dict(PARAMS, login_host=None, login_db="", login_password=None))
    assert "host" not in kwargs and "dbname" not in kwargs and "password" not in kwargs
    assert (kwargs["port"], kwargs["user"], kwargs["connect_timeout"]) == (5433, "pilito", 3)


@pytest.mark.parametrize("libpq_message, start", [
    ('connection to server at "db.internal" (10.0.0.5), port 5433 failed: FATAL:  password authentication failed '
     'for user "pilito"\n', "login failed for user pilito on PostgreSQL at db.internal port 5433: "),
    ('connection to server at "db.internal", port 5433 failed: fe_sendauth: no password supplied\n',
     "login failed for user pilito"),
    ('connection to server at "db.internal", port 5433 failed: FATAL:  role "pilito" does not exist\n',
     "login failed for user pilito"),
    ('connection to server at "db.internal", port 5433 failed: FATAL:  database "pilito" does not exist\n',
     "database pilito does not exist on PostgreSQL at db.internal port 5433"),
    ('connection to server at "db.internal" (10.0.0.5), port 5433 failed: Connection refused\n\tIs the server '
     'running on that host and accepting TCP/IP connections?\n',
     "cannot reach PostgreSQL at db.internal port 5433 (connect_timeout 3s): "),
    ('could not translate host name "db.internal" to address: Name or service not known\n',
     "cannot reach PostgreSQL at db.internal port 5433"),
    ("timeout expired\n", "cannot reach PostgreSQL at db.internal port 5433"),
])
def test_connect_errors_say_which_cause_it_is(monkeypatch, libpq_message, start):
    def fail(**kwargs):
        raise psycopg2.OperationalError(libpq_message + " password=" + kwargs["password"])

    monkeypatch.setattr(postgres.psycopg2, "connect", fail)
    with pytest.raises(FailCalled) as raised:
        postgres.connect(FakeModule(dict(PARAMS)))
    message = str(raised.value)
    assert message.startswith(start)
    assert SECRET not in message and postgres.REDACTED in message
    assert "\n" not in message


def test_connect_sets_autocommit_so_each_statement_is_its_own_transaction(monkeypatch):
    class Connection:
        autocommit = False

    seen = {}

    def connect(**kwargs):
        seen.update(kwargs)
        return Connection()

    monkeypatch.setattr(postgres.psycopg2, "connect", connect)
    connection = postgres.connect(FakeModule(dict(PARAMS)))
    assert connection.autocommit is True
    assert (seen["host"], seen["port"], seen["password"]) == ("db.internal", 5433, SECRET)


def test_missing_driver_fails_only_when_used(monkeypatch):
    monkeypatch.setattr(postgres, "HAS_PSYCOPG2", False)
    with pytest.raises(FailCalled, match=r"Failed to import the required Python library \(psycopg2\)"):
        postgres.ensure_psycopg2(FakeModule(dict(PARAMS)))


def test_redact_without_a_password_leaves_text_alone():
    assert postgres.redact("nothing secret", dict(login_password=None)) == "nothing secret"
    assert postgres.redact(ValueError("pw " + SECRET), dict(login_password=SECRET)) == "pw ********"
