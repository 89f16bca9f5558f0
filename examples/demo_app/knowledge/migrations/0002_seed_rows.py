from django.db import migrations

ROWS = 100
NULL_EVERY = 3  # every third row has chunk_index NULL, as in the runbook's production data


def seed(apps, schema_editor):
    TenantKnowledge = apps.get_model("knowledge", "TenantKnowledge")
    TenantKnowledge.objects.bulk_create(
        TenantKnowledge(
            tenant_id=n % 7,
            content=f"knowledge chunk {n}",
            chunk_index=None if n % NULL_EVERY == 0 else n,
        )
        for n in range(ROWS)
    )


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
