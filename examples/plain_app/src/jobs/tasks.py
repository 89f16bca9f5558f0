"""Three kinds of work: answers a user waits for, bulk indexing, and housekeeping."""

import time

from jobs.store import record
from jobs.worker import app


@app.task(name="jobs.tasks.answer", bind=True)
def answer(self, text):
    record(self.request, "jobs.tasks.answer")
    time.sleep(0.05)
    return f"answer to {text}"


@app.task(name="jobs.tasks.index", bind=True)
def index(self, number):
    record(self.request, "jobs.tasks.index")
    time.sleep(0.2)
    return number


@app.task(name="jobs.tasks.tidy", bind=True)
def tidy(self):
    record(self.request, "jobs.tasks.tidy")
