from django.db import models


class TenantKnowledge(models.Model):
    tenant_id = models.IntegerField()
    content = models.TextField()
    # The runbook's bug: nullable with no default, so some rows hold NULL.
    chunk_index = models.IntegerField(null=True)

    class Meta:
        db_table = "tenant_knowledge"
