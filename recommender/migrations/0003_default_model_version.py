"""The platform starts with the untrained ImageNet backbone as its active model version."""
from django.db import migrations

from recommender.services.versions import DEFAULT_VERSION, create_vector_indexes


def create_default_version(apps, schema_editor):
    ModelVersion = apps.get_model("recommender", "ModelVersion")
    version, _ = ModelVersion.objects.get_or_create(
        name=DEFAULT_VERSION["name"],
        defaults={"spec": DEFAULT_VERSION["spec"], "dim": DEFAULT_VERSION["dim"], "is_active": True},
    )
    create_vector_indexes(version.id, version.dim, schema_editor)


class Migration(migrations.Migration):
    dependencies = [("recommender", "0002_initial")]
    operations = [migrations.RunPython(create_default_version, migrations.RunPython.noop)]
