import json

from celery import current_app
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt
@require_POST
def send(request):
    """Sends one of the app's tasks the way the app's own code would, so its routing applies.
    Tests use it as a producer whose every task they can count by its id."""
    try:
        body = json.loads(request.body or b"{}")
        name, args, task_id = body["name"], list(body.get("args", [])), str(body["task_id"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "send {name, task_id, args}"}, status=400)
    if name.startswith("celery."):
        return JsonResponse({"error": "Celery's own tasks are not sent from here"}, status=400)
    current_app.send_task(name, args=args, task_id=task_id)
    queue = current_app.amqp.router.route({}, name)["queue"].name
    return JsonResponse({"task_id": task_id, "queue": queue})
