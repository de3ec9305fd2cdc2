"""Model versions: which embedding model is active, and the vector indexes each version gets.

Descriptor sizes differ between versions (1280 for the untrained Lite0, 512 for a trained CGD model), so the
descriptor column is an untyped `vector` and every version gets partial HNSW indexes (cosine) on a cast to its
own size, one per kind of image. Queries must use the same cast expression and filters to hit them
(recommender.services.search does).
"""
from django.db import connection, transaction

from recommender.models import ModelVersion

DEFAULT_VERSION = {"name": "untrained-lite0", "spec": "untrained-lite0", "dim": 1280}

# kind of image -> the Descriptor column that points at it
IMAGE_COLUMNS = {"snapshot": "snapshot_id", "item": "item_id", "wardrobe": "wardrobe_item_id"}


# HNSW build parameters, chosen by measurement at 10k and 100k items of 1536-d descriptors
# (bench/catalogue_scale.py; docs/RESULTS.md, issue 9): recall, build time and index size per setting.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
# Memory for building an index over existing rows (a new version's index fills as its rows are embedded,
# but a rebuild, e.g. REINDEX after a bulk load, needs the whole graph in memory to be fast).
INDEX_BUILD_MEMORY = "1GB"


def index_name(version_id: int, kind: str) -> str:
    return f"descriptor_v{version_id}_{kind}_hnsw"


def vector_index_sql(version_id: int, dim: int, kind: str, name: str | None = None, m: int = HNSW_M,
                     ef_construction: int = HNSW_EF_CONSTRUCTION) -> str:
    """CREATE INDEX for one version's partial HNSW index on one kind of image (cosine, on a cast to its size)."""
    return (
        f"CREATE INDEX IF NOT EXISTS {name or index_name(version_id, kind)} ON recommender_descriptor "
        f"USING hnsw ((embedding::vector({int(dim)})) vector_cosine_ops) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
        f"WHERE model_version_id = {int(version_id)} AND {IMAGE_COLUMNS[kind]} IS NOT NULL"
    )


def create_vector_indexes(version_id: int, dim: int, schema_editor=None) -> None:
    """Partial HNSW indexes for one version; safe to call again. Takes plain values so migrations can use it."""
    execute = schema_editor.execute if schema_editor else connection.cursor().execute
    with transaction.atomic():
        execute(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
        for kind in IMAGE_COLUMNS:
            execute(vector_index_sql(version_id, dim, kind))


def active_version() -> ModelVersion:
    version = ModelVersion.objects.filter(is_active=True).first()
    if version is None:
        version = _recover_active_version()
    if version is None:
        raise ModelVersion.DoesNotExist("no active model version; run `python manage.py migrate`")
    return version


def _recover_active_version() -> ModelVersion | None:
    """The active version vanished (deleted behind the platform's back): the newest version that describes
    every catalogue image takes over, so search keeps working."""
    from django.db.models import Count, Q

    from recommender.models import Descriptor, Item, Snapshot

    images = Snapshot.objects.count() + Item.objects.count()
    ready = Q(descriptors__status=Descriptor.Status.READY) & Q(descriptors__wardrobe_item__isnull=True)
    for version in ModelVersion.objects.annotate(ready=Count("descriptors", filter=ready)).order_by("-id"):
        if version.ready >= images:
            activate(version)
            return version
    return None


def protect_active_version(sender, instance, **kwargs):
    """pre_delete receiver: the active version serves every search and cannot be deleted (activate another
    one first); deleting any other version only drops its descriptors (and a job re-embedding with it)."""
    from django.db.models import ProtectedError

    if instance.is_active:
        raise ProtectedError(f"{instance} is the active model version; activate another one first", {instance})


def register_version(name: str, spec: str, dim: int) -> ModelVersion:
    """Registers a model version (inactive unless it is the first) with its indexes; returns it if it exists."""
    version, created = ModelVersion.objects.get_or_create(name=name, defaults={"spec": spec, "dim": dim})
    if created:
        create_vector_indexes(version.id, version.dim)
        if not ModelVersion.objects.filter(is_active=True).exists():
            activate(version)
    return version


@transaction.atomic
def activate(version: ModelVersion) -> None:
    from recommender.signals import active_version_changed

    ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
    version.is_active = True
    transaction.on_commit(lambda: active_version_changed.send(sender=ModelVersion, version=version))
