"""The app's database: every task run is a row, so a test can count that each ran exactly once."""

import os
import socket

import psycopg2


def connect():
    return psycopg2.connect(host=os.environ["STORE_HOST"], port=int(os.environ.get("STORE_PORT_INTERNAL", 5432)),
                            dbname="jobs", user="jobs", password=os.environ["STORE_PASSWORD"])


def create_table():
    with connect() as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS job_run (task_id text NOT NULL, task_name text NOT NULL, "
                       "queue text, worker text, ran_at timestamptz NOT NULL DEFAULT now())")


def record(request, name):
    queue = (request.delivery_info or {}).get("routing_key")
    with connect() as connection, connection.cursor() as cursor:
        cursor.execute("INSERT INTO job_run (task_id, task_name, queue, worker) VALUES (%s, %s, %s, %s)",
                       (request.id, name, queue, request.hostname or socket.gethostname()))
