"""The app's own Celery settings (a config module, as plain Celery apps keep them)."""

import os

broker_url = os.environ["JOBS_BROKER_URL"]
task_default_queue = "jobs"  # the app's one queue before priority queues
imports = ["jobs.tasks"]
worker_prefetch_multiplier = 4

# pilito.priority_queue: the rendered topology, once deployed, overrides the settings above.
try:
    from celery_priority import *  # noqa: F401,F403 # pylint: disable=wildcard-import,unused-wildcard-import
except ImportError:
    pass
