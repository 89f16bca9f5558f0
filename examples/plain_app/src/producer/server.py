"""The app's API: POST /send {"name", "args", "task_id"} sends a task by name through the producer's
own Celery app (so its routing applies) and answers with the queue it went to; GET /health."""

import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jobs.store import create_table
from producer.celeryapp import app

ALLOWED = {"jobs.tasks.answer", "jobs.tasks.index", "jobs.tasks.tidy"}


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.answer(200 if self.path == "/health" else 404, {"ok": self.path == "/health"})

    def do_POST(self):  # noqa: N802
        if self.path != "/send":
            self.answer(404, {"error": "not found"})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            name, args, task_id = body["name"], list(body.get("args", [])), body.get("task_id")
        except (ValueError, KeyError, TypeError):
            self.answer(400, {"error": "send {name, args, task_id}"})
            return
        if name not in ALLOWED:
            self.answer(400, {"error": f"unknown task {name}"})
            return
        try:
            result = app.send_task(name, args=args, task_id=task_id)
        except Exception as exc:  # the broker is down: say so, the client retries with the same id
            self.answer(503, {"error": type(exc).__name__})
            return
        queue = app.amqp.router.route({}, name)["queue"].name
        self.answer(200, {"task_id": result.id, "queue": queue})

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    # Stopped, the server answers the requests it took before it exits, as a web server stops warm:
    # a task sent and then cut off unanswered would be sent again by the client, and run twice.
    daemon_threads = False


if __name__ == "__main__":
    create_table()
    server = Server(("0.0.0.0", 8100), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    server.server_close()
