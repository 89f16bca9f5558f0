from celery import shared_task

from knowledge.models import TenantKnowledge


@shared_task
def count_missing_chunk_index():
    """Periodic (celery_beat): how many knowledge rows still lack a chunk_index."""
    return TenantKnowledge.objects.filter(chunk_index__isnull=True).count()
