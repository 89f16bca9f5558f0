from celery.signals import task_postrun

from runs.models import TaskRun


@task_postrun.connect
def record_task_run(sender=None, task_id=None, task=None, state=None, **kwargs):
    request = task.request
    TaskRun.objects.create(
        task_id=task_id,
        task_name=task.name,
        queue=(request.delivery_info or {}).get("routing_key") or "",
        worker=request.hostname or "",
        state=state or "",
    )
