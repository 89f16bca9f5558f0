import json

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from crawler.backlog import queue_backlog

MAX_BACKLOG = 10000


@csrf_exempt
@require_POST
def backlog(request):
    try:
        body = json.loads(request.body or b"{}")
        crawls, pages = int(body.get("crawls", 15)), int(body.get("pages", 10))
    except ValueError:
        return JsonResponse({"error": "crawls and pages must be integers"}, status=400)
    if not (0 <= crawls <= MAX_BACKLOG and 0 <= pages <= MAX_BACKLOG):
        return JsonResponse({"error": f"crawls and pages must be between 0 and {MAX_BACKLOG}"}, status=400)
    ids = queue_backlog(crawls, pages)
    return JsonResponse({"crawls": crawls, "pages": pages, "task_ids": ids})
