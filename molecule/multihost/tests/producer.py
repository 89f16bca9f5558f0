"""Runs on the app host (stdlib only): sends the demo's tasks to its web API until /tmp/stop-producer
appears, then prints what it sent. A send without an answer is retried with the same task id."""

import json
import os
import sys
import time
import urllib.request

PREFIX, RATE = sys.argv[1], float(sys.argv[2])
URL = "http://127.0.0.1:8000/api/tasks/"
TASKS = [("chat.tasks.generate_ai_reply", lambda n: [f"multihost {n}", time.time()]),
         ("crawler.tasks.process_page_content", lambda n: [n]),
         ("knowledge.tasks.count_missing_chunk_index", lambda n: [])]
sent, unsent, retried = [], [], []
start, n = time.monotonic(), 0
while not os.path.exists("/tmp/stop-producer") and time.monotonic() - start < 2400:
    name, make_args = TASKS[n % len(TASKS)]
    task_id = f"{PREFIX}-{n}"
    body = json.dumps({"name": name, "args": make_args(n), "task_id": task_id}).encode()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(URL, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                json.load(response)
            sent.append(task_id)
            break
        except OSError:
            retried.append(task_id)
            time.sleep(0.3)
    else:
        unsent.append(task_id)
    n += 1
    time.sleep(max(0.0, start + n / RATE - time.monotonic()))
print(json.dumps({"sent": sent, "unsent": unsent, "retried": sorted(set(retried))}))
