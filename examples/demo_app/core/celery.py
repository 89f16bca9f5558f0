import os
from contextlib import suppress
from importlib import import_module

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

app = Celery("core")
app.config_from_object("django.conf:settings", namespace="CELERY")
# The opt-in line: queues, routes and rate limits rendered at deploy time by
# pilito.priority_queue. Absent before the deploy, and then the app runs as it always did.
with suppress(ModuleNotFoundError):
    app.conf.update(import_module("celery_priority").settings)
app.autodiscover_tasks()
