"""Item descriptors move from an HNSW to an IVFFlat index (recall on near-duplicate groups, docs/RESULTS.md
issue 9, "recall at 100k"); the version records what the index was trained on, for the reconciler."""
from django.db import migrations, models

from recommender.services.versions import create_vector_indexes


def item_indexes_to_ivfflat(apps, schema_editor):
    ModelVersion = apps.get_model("recommender", "ModelVersion")
    for version in ModelVersion.objects.all():
        schema_editor.execute(f"DROP INDEX IF EXISTS descriptor_v{int(version.id)}_item_hnsw")
        lists, rows = create_vector_indexes(version.id, version.dim, schema_editor)
        ModelVersion.objects.filter(pk=version.pk).update(item_index_lists=lists, item_index_rows=rows)


class Migration(migrations.Migration):
    dependencies = [("recommender", "0009_training_job_attempts_and_heartbeat")]
    operations = [
        migrations.AddField(
            model_name="modelversion", name="item_index_lists",
            field=models.PositiveIntegerField(
                default=32, help_text="Lists of the item index (while it is rebuilt: the larger of old and new)."),
        ),
        migrations.AddField(
            model_name="modelversion", name="item_index_rows",
            field=models.PositiveIntegerField(
                default=0, help_text="Ready item descriptors the item index's lists were trained on."),
        ),
        migrations.RunPython(item_indexes_to_ivfflat, migrations.RunPython.noop),
    ]
