"""The Celery config module as the role renders it (roles/priority_queue/templates/celery_priority.py.j2),
for tests that load it into real workers or import it."""

import json
from pathlib import Path

import jinja2

TEMPLATE = Path(__file__).resolve().parents[1] / "roles/priority_queue/templates/celery_priority.py.j2"


def render_celery_config(directory, queues=("high_priority", "default", "low_priority"), routes=None,
                         rate_limits=None, default_queue="default", visibility_timeout=3600, legacy_queues=("celery",)):
    """Write celery_priority.py into directory and return its path."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["to_json"] = json.dumps
    text = env.from_string(TEMPLATE.read_text()).render(
        ansible_managed="rendered by the tests",
        priority_queue_queues=list(queues),
        priority_queue_default_queue=default_queue,
        priority_queue_routes=routes or {},
        priority_queue_rate_limits=rate_limits or {},
        __priority_queue_visibility_timeout=visibility_timeout,
        __priority_queue_all_queues=list(dict.fromkeys([*queues, *legacy_queues])),
    )
    path = Path(directory) / "celery_priority.py"
    path.write_text(text)
    return path
