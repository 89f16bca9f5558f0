"""Topology 2 of `make bench`: what many users try first instead of queues and pools of their own.
One queue, Celery message priorities (the AI task first; on kombu's Redis transport the lowest
number is taken first), every priority its own list, prefetch left at Celery's default. The demo app
loads it as it loads the collection's rendered config (core/celery.py: `celery_priority`).

The priorities are set by route, every task's: `task_default_priority` would not do, since it
becomes each task's own `priority`, which beats the route's (the AI task would be sent at the
default too, behind everything)."""

settings = {
    "task_routes": {"chat.tasks.*": {"priority": 0}, "*": {"priority": 9}},
    "broker_transport_options": {"priority_steps": list(range(10)), "queue_order_strategy": "priority"},
}
