import time

from celery import shared_task

from core.timing import scaled


@shared_task(bind=True)
def generate_ai_reply(self, message, sent_at):
    """The tenant's AI chat answer; the sleep stands in for the model call."""
    started_at = time.time()
    time.sleep(scaled(2))
    return {
        "answer": f"AI reply to: {message[:200]}",
        "sent_at": sent_at,
        "started_at": started_at,
        "finished_at": time.time(),
        "worker": self.request.hostname,
        "queue": (self.request.delivery_info or {}).get("routing_key"),
    }
