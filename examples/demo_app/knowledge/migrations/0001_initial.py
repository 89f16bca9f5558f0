from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="TenantKnowledge",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("tenant_id", models.IntegerField()),
                ("content", models.TextField()),
                ("chunk_index", models.IntegerField(null=True)),
            ],
            options={"db_table": "tenant_knowledge"},
        ),
    ]
