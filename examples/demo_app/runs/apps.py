from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"

    def ready(self):
        from runs import signals  # noqa: F401  (connects the Celery signal handlers)
