"""The whole pipeline with real parts: import real looks, a real Celery worker embeds them with the real model
into the real Postgres, and pgvector answers nearest-neighbour queries in the order numpy gives."""
import numpy as np
import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client

from ml.embedding import load_embedder
from recommender.models import Descriptor, Item, Snapshot
from recommender.services.search import descriptor_of, nearest
from tests.conftest import copy_looks, wait_until

LOOKS = (0, 15, 149, 288)


@pytest.fixture
def embedded_catalogue(sample_dir, tmp_path, transactional_db, active_version, celery_worker_process):
    folder = copy_looks(sample_dir, LOOKS, tmp_path / "looks")
    call_command("import_looks", str(folder), verbosity=0)
    total = Descriptor.objects.count()
    assert total == Snapshot.objects.count() + Item.objects.count() > 0
    wait_until(
        lambda: Descriptor.objects.filter(status=Descriptor.Status.READY).count() == total,
        timeout=300,
        message="the worker embeds every imported image",
    )
    return folder


def test_worker_embeds_with_the_real_model(embedded_catalogue, active_version):
    embedder = load_embedder(active_version.spec, settings.MODEL_CACHE_DIR)
    snapshot = Snapshot.objects.first()
    _, vectors, errors = embedder.embed_files([snapshot.image.path])
    assert not errors
    stored = descriptor_of("snapshot", snapshot.id)
    assert stored.shape == (active_version.dim,)
    np.testing.assert_allclose(stored, vectors[0], atol=1e-4)


def test_vector_query_orders_items_as_numpy_does(embedded_catalogue, active_version):
    snapshot = Snapshot.objects.first()
    query = descriptor_of("snapshot", snapshot.id)
    items = list(Item.objects.order_by("id"))
    matrix = np.stack([descriptor_of("item", item.id) for item in items])
    similarities = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    expected = [items[i].id for i in np.argsort(-similarities, kind="stable")]

    matches = nearest(query, "item", k=len(items))

    assert [m.id for m in matches] == expected
    np.testing.assert_allclose([m.score for m in matches], np.sort(similarities)[::-1], atol=1e-5)
    assert len(nearest(query, "item", k=6)) == 6


def test_healthz_reports_the_catalogue(embedded_catalogue, active_version):
    response = Client().get("/healthz")
    assert response.status_code == 200
    report = response.json()
    assert report["database"] == "ok" and report["redis"] == "ok"
    assert report["workers"] >= 1
    assert report["model"]["active"] == active_version.name
    catalogue = report["catalogue"]
    assert catalogue["looks"] == len(LOOKS)
    assert catalogue["embedded"] == Snapshot.objects.count() + Item.objects.count()
    assert catalogue["pending"] == catalogue["failed"] == 0


def test_a_corrupt_stored_image_fails_with_its_error(embedded_catalogue, active_version):
    """An image that became unreadable after import is marked failed with the error, not retried forever."""
    item = Item.objects.first()
    descriptor = Descriptor.objects.get(item=item)
    descriptor.status, descriptor.queued_at, descriptor.attempts = Descriptor.Status.PENDING, None, 0
    descriptor.save()  # pending and never sent: the reconciler (embed_pending) sends it
    with open(item.image.path, "wb") as handle:
        handle.write(b"garbage")
    call_command("embed_pending", verbosity=0)
    wait_until(
        lambda: Descriptor.objects.get(pk=descriptor.pk).status == Descriptor.Status.FAILED,
        timeout=60,
        message="the corrupt image is marked failed",
    )
    assert Descriptor.objects.get(pk=descriptor.pk).error


@pytest.mark.parametrize("in_transaction", [False, True])
def test_compute_descriptors_stores_exact_vectors_from_its_writer_thread(
    sample_dir, tmp_path, transactional_db, active_version, celery_worker_process, in_transaction
):
    """The worker's path, called in-process on real images, the real model and the real Postgres: each step's
    vectors are written by the writer thread while the model runs on the next step (or in the caller's thread
    inside a transaction, where another connection would not see the rows). One writer thread serves every
    call (its connection kept between tasks); no decoder thread is left behind."""
    import threading

    from django.db import transaction

    from recommender.services.embedding import close_writer_thread, compute_descriptors

    descriptors = _imported_then_pending_again(sample_dir, tmp_path, LOOKS[:2], active_version)
    descriptors.update(status=Descriptor.Status.PENDING, attempts=0, embedding=None, queued_at=None)
    ids = sorted(descriptors.values_list("id", flat=True))
    assert len(ids) > 8  # more than one forward step of 8: a write overlaps a forward pass

    def threads(prefix):
        return [t for t in threading.enumerate() if t.name.startswith(prefix)]

    try:
        if in_transaction:
            with transaction.atomic():
                outcome = compute_descriptors(ids)
        else:
            outcome = compute_descriptors(ids[: len(ids) // 2])
            writers, backend = threads("db-writer"), _writer_backend_pid()
            outcome = {key: count + compute_descriptors(ids)[key] for key, count in outcome.items()}
            # the same thread and the same connection for both tasks
            assert len(writers) == 1 and threads("db-writer") == writers and _writer_backend_pid() == backend
        assert not threads("decode")
    finally:
        close_writer_thread()  # and its connection: the test database is flushed (and dropped) after the test
    assert not threads("db-writer")

    assert outcome == {"ready": len(ids), "failed": 0}
    embedder = load_embedder(active_version.spec, settings.MODEL_CACHE_DIR)
    rows = list(Descriptor.objects.filter(id__in=ids).select_related("snapshot", "item").order_by("id"))
    _, expected, errors = embedder.embed_files([row.image_owner.image.path for row in rows])
    assert not errors
    for row, vector in zip(rows, expected):
        assert row.status == Descriptor.Status.READY and row.error == ""  # (attempts: a session worker may race)
        stored = np.asarray(row.embedding, dtype=np.float32)
        np.testing.assert_allclose(stored, vector, atol=1e-5)  # the same model on the same inputs


def test_rows_that_share_a_stored_file_each_get_its_vector_or_its_error(
    sample_dir, tmp_path, transactional_db, active_version, celery_worker_process
):
    """Two items on one stored photo (listed twice) in one task: the file is embedded once and both rows are
    stored with its vector; two items on a missing file both fail with its error. Before, the task kept one row
    per file name and left the other pending, to be sent again by the reconciler."""
    from recommender.services.embedding import close_writer_thread, compute_descriptors

    _imported_then_pending_again(sample_dir, tmp_path, LOOKS[:1], active_version)
    original = Item.objects.order_by("id").first()
    expected = descriptor_of("item", original.id)

    def item_on(name, number):
        item = Item.objects.create(image=name, sha256=f"{number:064x}", original_name=f"listed again {number}")
        return Descriptor.objects.create(model_version=active_version, item=item)

    twins = [Descriptor.objects.get(model_version=active_version, item=original), item_on(original.image.name, 1)]
    missing = [item_on("catalogue/items/not-there.jpg", 2), item_on("catalogue/items/not-there.jpg", 3)]
    Descriptor.objects.filter(pk=twins[0].pk).update(status=Descriptor.Status.PENDING, embedding=None, attempts=0)
    try:
        outcome = compute_descriptors([d.pk for d in twins + missing])
    finally:
        close_writer_thread()
    assert outcome == {"ready": 2, "failed": 2}
    stored = []
    for twin in twins:
        twin.refresh_from_db()
        assert twin.status == Descriptor.Status.READY
        stored.append(np.asarray(twin.embedding, dtype=np.float32))
    np.testing.assert_array_equal(stored[0], stored[1])  # one decode, one vector, written to both rows
    np.testing.assert_allclose(stored[0], expected, atol=1e-5)  # the same model on the same inputs
    errors = set()
    for row in missing:
        row.refresh_from_db()
        assert row.status == Descriptor.Status.FAILED and "not-there.jpg" in row.error
        errors.add(row.error)
    assert len(errors) == 1


def _imported_then_pending_again(sample_dir, tmp_path, looks, version):
    """Imports looks and lets the session's worker embed them (the import queues them), so that no task of
    theirs is left to race the in-process calls of the test; returns the version's descriptors."""
    call_command("import_looks", str(copy_looks(sample_dir, looks, tmp_path / "looks")), verbosity=0)
    descriptors = Descriptor.objects.filter(model_version=version)
    wait_until(lambda: not descriptors.exclude(status=Descriptor.Status.READY).exists(), timeout=300,
               message="the worker embeds the imported images")
    return descriptors


def _writer_backend_pid():
    """The Postgres backend of the descriptor writer thread's connection (None: it has none open)."""
    from django.db import connection

    from recommender.services.embedding import _writer_thread

    def backend_pid():
        return connection.connection.info.backend_pid if connection.connection is not None else None

    return _writer_thread().submit(backend_pid).result()


def test_the_writer_thread_reconnects_when_its_connection_was_lost(
    sample_dir, tmp_path, transactional_db, active_version, celery_worker_process
):
    """The writer keeps its connection between tasks; when the server dropped it meanwhile (Postgres restarted,
    an idle timeout), the next task's writes find out before they start (Django's health check) and store every
    row on a new connection: nothing fails, nothing is retried."""
    from django.db import connection

    from recommender.services.embedding import close_writer_thread, compute_descriptors

    descriptors = _imported_then_pending_again(sample_dir, tmp_path, LOOKS[:1], active_version)
    descriptors.update(status=Descriptor.Status.PENDING, attempts=0, embedding=None, queued_at=None)
    ids = sorted(descriptors.values_list("id", flat=True))
    try:
        assert compute_descriptors(ids[:2]) == {"ready": 2, "failed": 0}
        lost = _writer_backend_pid()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [lost])
            assert cursor.fetchone()[0] is True

        def backend_gone():
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [lost])
                return cursor.fetchone()[0] == 0

        wait_until(backend_gone, timeout=10, message="the writer's backend ended")
        assert compute_descriptors(ids) == {"ready": len(ids) - 2, "failed": 0}
        assert _writer_backend_pid() not in (None, lost)
    finally:
        close_writer_thread()
    assert descriptors.filter(status=Descriptor.Status.READY).count() == len(ids)
    assert not descriptors.exclude(attempts=1).exists()  # one try each: no write failed and was retried
