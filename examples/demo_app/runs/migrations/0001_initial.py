from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="TaskRun",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("task_id", models.CharField(db_index=True, max_length=64)),
                ("task_name", models.CharField(max_length=200)),
                ("queue", models.CharField(blank=True, max_length=200)),
                ("worker", models.CharField(blank=True, max_length=200)),
                ("state", models.CharField(max_length=20)),
                ("finished_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"db_table": "task_run"},
        ),
    ]
