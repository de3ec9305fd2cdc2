"""Descriptors stored in their row, and item indexes on halfvec (docs/RESULTS.md, "Issue 9: session 10").

1. `embedding` gets STORAGE MAIN: a 1536-d vector (6 KB) is over Postgres's 2 KB TOAST threshold, so by
   default it lives in the TOAST table and every read of a descriptor (a sequential scan over a small
   catalogue, the candidates' vectors, re-scoring) fetches it through the TOAST index. MAIN keeps it in the
   row (one row a page). The setting applies to rows written from now on (every embedding and re-embedding);
   rows already written are moved by rewriting the table (VACUUM FULL, which also rebuilds its indexes) when
   it is small enough to do here (REWRITE_MAX_ROWS). A larger table keeps working as it is (both forms read
   the same); rewrite it in a maintenance window (`VACUUM FULL recommender_descriptor`: it locks the table;
   measured in RESULTS), or let the next re-embedding write every row anew.
2. each version's item IVFFlat index is rebuilt on `embedding::halfvec(dim)` (services.versions), beside the
   old one (CREATE INDEX CONCURRENTLY: searches go on), which is then dropped.
"""
from django.db import migrations

from recommender.services.versions import ivfflat_lists, index_name, vector_index_sql, INDEX_BUILD_MEMORY

REWRITE_MAX_ROWS = 50_000  # measured: VACUUM FULL at 100k 1536-d rows takes (RESULTS, session 10)


def halfvec_item_indexes(apps, schema_editor):
    ModelVersion = apps.get_model("recommender", "ModelVersion")
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SET maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
        for version in ModelVersion.objects.all():
            name = index_name(version.id, "item")
            cursor.execute("SELECT pg_get_indexdef(to_regclass(%s))", [name])
            definition = cursor.fetchone()[0]
            if definition is None or "halfvec" in definition:
                continue  # none (a version being re-embedded) or already converted
            cursor.execute(
                "SELECT count(*) FROM recommender_descriptor WHERE model_version_id = %s AND item_id IS NOT NULL "
                "AND status = 'ready'", [version.id])
            rows = cursor.fetchone()[0]
            lists = ivfflat_lists(rows)
            cursor.execute(f"DROP INDEX IF EXISTS {name}_halfvec")
            cursor.execute(vector_index_sql(version.id, version.dim, "item", name=f"{name}_halfvec", lists=lists,
                                            concurrently=True))
            cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            cursor.execute(f"ALTER INDEX {name}_halfvec RENAME TO {name}")
            ModelVersion.objects.filter(pk=version.pk).update(item_index_lists=lists, item_index_rows=rows)
        cursor.execute("RESET maintenance_work_mem")


def descriptors_in_their_rows(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("ALTER TABLE recommender_descriptor ALTER COLUMN embedding SET STORAGE MAIN")
        cursor.execute("SELECT count(*) FROM recommender_descriptor WHERE embedding IS NOT NULL")
        rows = cursor.fetchone()[0]
        if 0 < rows <= REWRITE_MAX_ROWS:
            cursor.execute("VACUUM FULL recommender_descriptor")
        elif rows > REWRITE_MAX_ROWS:
            print(f"\n  recommender_descriptor: {rows} stored descriptors stay where they are (new ones are stored "
                  "in their row); run `VACUUM FULL recommender_descriptor` in a maintenance window to move them")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY and VACUUM FULL cannot run in a transaction
    dependencies = [("recommender", "0010_item_ivfflat_index")]
    operations = [
        migrations.RunPython(halfvec_item_indexes, migrations.RunPython.noop),
        migrations.RunPython(descriptors_in_their_rows, migrations.RunPython.noop),
    ]
