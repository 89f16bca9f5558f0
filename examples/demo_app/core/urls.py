from django.urls import path

from chat.views import chat
from core.tasks_api import send
from core.views import health
from crawler.views import backlog

urlpatterns = [
    path("api/health/", health),
    path("api/chat/", chat),
    path("api/backlog/", backlog),
    path("api/tasks/", send),
]
