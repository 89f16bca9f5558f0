from django.db import models


class TaskRun(models.Model):
    """One row per finished task run, so tests can count that nothing was lost or run twice."""

    task_id = models.CharField(max_length=64, db_index=True)
    task_name = models.CharField(max_length=200)
    queue = models.CharField(max_length=200, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=20)
    finished_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "task_run"
