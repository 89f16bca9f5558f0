"""How long pg_column_default takes to backfill a big table, and how long one batch holds its locks.

    python benchmarks/pg_column_default_bench.py --rows 1000000

Starts a PostgreSQL 15 container from the demo's db image on an ephemeral 127.0.0.1 port (removed afterwards),
or uses the server given by --host/--port/--user/--db with the password in PGPASSWORD. Fills a table with NULL
rows, runs the module's backfill (the same function the module runs) and, for comparison, the runbook's single
UPDATE on an identical table.
"""

import argparse
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "build" / "collections"))

from ansible_collections.pilito.priority_queue.plugins.modules.pg_column_default import (  # noqa: E402
    build_backfill_batch,
    set_column_default,
)


def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def start_postgres():
    images = dict(line.split("=", 1) for line in subprocess.run(
        [ROOT / "scripts/demo_images.sh"], capture_output=True, text=True, check=True).stdout.splitlines())
    password = secrets.token_urlsafe(16)
    name = f"pilito-bench-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--rm", "--name", name, "-p", "127.0.0.1::5432", "-e", "POSTGRES_USER=pilito",
           "-e", f"POSTGRES_PASSWORD={password}", "-e", "POSTGRES_DB=pilito", images["DB_IMAGE"])
    port = int(docker("port", name, "5432").splitlines()[0].rsplit(":", 1)[1])
    dsn = dict(host="127.0.0.1", port=port, user="pilito", password=password, dbname="pilito")
    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg2.connect(**dsn).close()
            return name, dsn
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def fill(connection, table, rows):
    with connection.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        cur.execute(f'CREATE TABLE "{table}" (id bigserial PRIMARY KEY, tenant_id integer, body text, '
                    'chunk_index integer)')
        cur.execute(f'INSERT INTO "{table}" (tenant_id, body) '
                    "SELECT n %% 500, 'chunk of page ' || n FROM generate_series(1, %s) n", (rows,))
        cur.execute(f'VACUUM ANALYZE "{table}"')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--host", help="use this server instead of starting a container (password in PGPASSWORD)")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--db", default="postgres")
    parser.add_argument("--no-compare", action="store_true", help="skip the runbook's single UPDATE")
    options = parser.parse_args()

    container = None
    if options.host:
        dsn = dict(host=options.host, port=options.port, user=options.user, dbname=options.db,
                   password=os.environ.get("PGPASSWORD"))
    else:
        container, dsn = start_postgres()
    try:
        connection = psycopg2.connect(**dsn)
        connection.autocommit = True
        table = "bench_knowledge"
        started = time.monotonic()
        fill(connection, table, options.rows)
        print(f"filled {options.rows} NULL rows in {time.monotonic() - started:.1f} s")

        with connection.cursor() as cur:
            cur.execute("EXPLAIN " + build_backfill_batch("public", table, "chunk_index").as_string(connection),
                        dict(value="0", after="(0,0)", limit=options.batch_size))
            scans = sorted({line.split("->")[-1].split("(cost")[0].strip() for (line,) in cur.fetchall()
                            if " Scan on " in line})
        print("batch plan scans:", "; ".join(scans))

        started = time.monotonic()
        result = set_column_default(connection, "public", table, "chunk_index", "0",
                                    batch_size=options.batch_size, lock_timeout_ms=5000)
        total = time.monotonic() - started
        print(f"pg_column_default: {result['rows_updated']} rows in {result['batches']} batches of "
              f"{options.batch_size}, total {total:.2f} s, longest batch (row locks held) "
              f"{result['max_batch_seconds']:.3f} s")

        if not options.no_compare:
            fill(connection, table, options.rows)
            with connection.cursor() as cur:
                started = time.monotonic()
                cur.execute(f'ALTER TABLE "{table}" ALTER COLUMN chunk_index SET DEFAULT 0')
                cur.execute(f'UPDATE "{table}" SET chunk_index = 0 WHERE chunk_index IS NULL')
                single = time.monotonic() - started
                print(f"runbook single UPDATE: {cur.rowcount} rows in one transaction, {single:.2f} s "
                      f"with all of them locked")
        with connection.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        connection.close()
    finally:
        if container:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


if __name__ == "__main__":
    main()
