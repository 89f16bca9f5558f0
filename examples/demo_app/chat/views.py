import json
import time

from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from chat.tasks import generate_ai_reply


@csrf_exempt
@require_POST
def chat(request):
    """Enqueue the AI reply, wait for it, and say how long it sat in the queue."""
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return JsonResponse({"error": "body must be JSON"}, status=400)
    message = str(body.get("message", "hello"))
    timeout = float(body.get("timeout", 600))
    sent_at = time.time()
    result = generate_ai_reply.delay(message, sent_at)
    try:
        reply = result.get(timeout=timeout)
    except CeleryTimeoutError:
        return JsonResponse({"error": f"no reply within {timeout} s", "task_id": result.id}, status=504)
    return JsonResponse(
        {
            "answer": reply["answer"],
            "task_id": result.id,
            "queue_wait_seconds": round(reply["started_at"] - sent_at, 3),
            "total_seconds": round(time.time() - sent_at, 3),
            "worker": reply["worker"],
            "queue": reply["queue"],
        }
    )
