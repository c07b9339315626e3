from django.db import migrations, models


def fill_unit(apps, schema_editor):
    WorkItem = apps.get_model("generation", "WorkItem")
    for item in WorkItem.objects.all().only("pk", "seed_index", "chunk_index"):
        item.unit = f"seed {item.seed_index}" if item.seed_index is not None else f"chunk {item.chunk_index}"
        item.save(update_fields=["unit"])


class Migration(migrations.Migration):
    dependencies = [("generation", "0001_initial")]

    operations = [
        migrations.RemoveConstraint(model_name="workitem", name="unique_work_item"),
        migrations.AddField(
            model_name="workitem",
            name="unit",
            field=models.CharField(default="", help_text='"seed N" or "chunk N" (0-based)', max_length=32),
            preserve_default=False,
        ),
        migrations.RunPython(fill_unit, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="workitem",
            constraint=models.UniqueConstraint(fields=("run", "leaf_path", "unit"), name="unique_work_item_unit"),
        ),
    ]
