"""The workers' Celery app: `python3 -m celery -A jobs.worker worker`."""

from celery import Celery

app = Celery("jobs")
app.config_from_object("jobs.celeryconfig")
