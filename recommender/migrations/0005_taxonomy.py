"""Creates the category and style taxonomies (recommender.taxonomy); idempotent, never deletes rows."""
from django.db import migrations

from recommender.taxonomy import ensure_taxonomy


def create_taxonomy(apps, schema_editor):
    ensure_taxonomy(apps.get_model("recommender", "Category"), apps.get_model("recommender", "Style"))


class Migration(migrations.Migration):
    dependencies = [("recommender", "0004_reembed_job")]
    operations = [migrations.RunPython(create_taxonomy, migrations.RunPython.noop)]
