"""How descriptors are stored (migration 0011): in their row (STORAGE MAIN), not in the TOAST table, which
the migration also does for rows written before it; the item index on halfvec."""
import importlib
from types import SimpleNamespace

import numpy as np
from django.db import connection

from recommender.models import Descriptor, Item
from recommender.services.versions import index_name

MIGRATION = importlib.import_module("recommender.migrations.0011_descriptor_storage_main_and_halfvec_item_index")


def toasted_chunks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltoastrelid::regclass FROM pg_class WHERE relname = 'recommender_descriptor'")
        (toast,) = cursor.fetchone()
        cursor.execute(f"SELECT count(*) FROM {toast}")
        return cursor.fetchone()[0]


def storage() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = 'recommender_descriptor'::regclass "
                       "AND attname = 'embedding'")
        return cursor.fetchone()[0]


def test_descriptors_live_in_their_row_and_the_migration_moves_old_ones(transactional_db, active_version):
    assert storage() == "m"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_indexdef(to_regclass(%s))", [index_name(active_version.id, "item")])
        assert "halfvec_cosine_ops" in cursor.fetchone()[0]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20, active_version.dim)).astype(np.float32)  # 5 KB: over the 2 KB TOAST threshold

    def stored(prefix):
        items = Item.objects.bulk_create(Item(image=f"catalogue/items/{prefix}-{i}.jpg", sha256=f"{prefix}-{i}")
                                         for i in range(len(vectors)))
        Descriptor.objects.bulk_create(Descriptor(model_version=active_version, item=item, embedding=vector,
                                                  status=Descriptor.Status.READY)
                                       for item, vector in zip(items, vectors))
        return items

    stored("main")
    assert toasted_chunks() == 0  # written after the migration: in the row

    with connection.cursor() as cursor:  # a database as it was before the migration
        cursor.execute("ALTER TABLE recommender_descriptor ALTER COLUMN embedding SET STORAGE EXTERNAL")
    old = stored("before")
    assert toasted_chunks() > 0
    MIGRATION.descriptors_in_their_rows(None, SimpleNamespace(connection=connection))
    assert storage() == "m" and toasted_chunks() == 0
    for item, vector in zip(old, vectors):  # the same vectors, read back
        np.testing.assert_array_equal(np.asarray(Descriptor.objects.get(item=item).embedding, dtype=np.float32), vector)
