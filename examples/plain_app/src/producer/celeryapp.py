"""The producer's own Celery app, apart from the workers' (as in apps whose web and workers are
built from different folders). It knows task names only, and is configured in code."""

import os
from contextlib import suppress
from importlib import import_module

from celery import Celery

app = Celery("producer", broker=os.environ["JOBS_BROKER_URL"])
app.conf.task_default_queue = "jobs"
# pilito.priority_queue: the rendered topology, once deployed, after the app's own settings.
with suppress(ModuleNotFoundError):
    app.conf.update(import_module("celery_priority").settings)
