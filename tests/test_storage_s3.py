"""No shared local disk assumed: with STORAGES pointing at S3-compatible storage (django-storages), a real Celery
worker embeds images it reads through the storage API, and the tagger reads them the same way.

moto's standalone S3 server (started here on a free port) stands in for S3, in this test only."""
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from django.conf import settings
from django.core.files.base import ContentFile

from fashionsite.launcher import free_port
from recommender.models import Descriptor, Item, Look, Snapshot
from recommender.services.embedding import create_pending_descriptors, send_batches
from tests.conftest import wait_until, worker_of_its_own

QUEUE = "s3-test"  # a queue of its own: the session's worker (local media) never takes these tasks
BUCKET = "fashionsite-test-media"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_S3_REGION_NAME": "us-east-1",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_server(tmp_path):
    port = free_port()
    log = (tmp_path / "moto.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answers():
        try:
            return urllib.request.urlopen(url, timeout=1).status < 500
        except Exception:  # noqa: BLE001
            return server.poll() is not None and pytest.fail(f"moto server exited: {(tmp_path / 'moto.log').read_text()}")

    wait_until(answers, timeout=60, message="moto's S3 server answers")
    yield url
    server.terminate()
    server.wait(timeout=10)
    log.close()


@pytest.fixture
def s3_storage(s3_server, settings, monkeypatch):
    import boto3

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": BUCKET, "endpoint_url": s3_server, "region_name": "us-east-1",
                        "querystring_auth": False, "file_overwrite": False},
        },
    }
    return s3_server


@pytest.fixture
def s3_worker(s3_storage, transactional_db, tmp_path):
    """A real worker whose settings point the media at the S3 server (as a worker on another host would)."""
    log_path = tmp_path / "s3-worker.log"
    with worker_of_its_own(QUEUE, log_path, FASHIONSITE_S3_BUCKET=BUCKET, AWS_S3_ENDPOINT_URL=s3_storage,
                           FASHIONSITE_AUTO_TAGGING="0", **CREDENTIALS) as worker:
        yield worker, log_path


def test_worker_embeds_images_read_from_s3(sample_dir, active_version, s3_worker):
    from ml.embedding import load_embedder

    worker, log_path = s3_worker
    files = sorted(sample_dir.glob("15_*"))  # look 15: snapshots and items
    look = Look.objects.create(key="15")
    descriptors, expected = [], {}
    for path in files:
        data = path.read_bytes()
        if path.stem.endswith("part"):
            image = Snapshot(look=look, sha256=str(len(expected)), original_name=path.name)
        else:
            image = Item(sha256=str(len(expected)), original_name=path.name)
        image.image.save(path.name, ContentFile(data), save=True)
        descriptor = create_pending_descriptors(active_version, **{type(image).__name__.lower(): image})
        descriptors.append(descriptor)
        expected[descriptor.id] = path
    stored = Item.objects.first().image
    with pytest.raises(NotImplementedError):
        stored.storage.path(stored.name)  # no local file anywhere: the media live in the bucket
    assert stored.storage.exists(stored.name)

    assert send_batches([[d.id for d in descriptors]], QUEUE) == 1
    wait_until(lambda: worker.poll() is not None or not Descriptor.objects.exclude(status="ready").exists(),
               timeout=240, message=f"the S3 worker embeds every image (log: {log_path})")
    assert worker.poll() is None, log_path.read_text()[-3000:]

    embedder = load_embedder(active_version.spec, settings.MODEL_CACHE_DIR)
    ids = sorted(expected)
    _, vectors, errors = embedder.embed_files([expected[i] for i in ids])
    assert not errors
    stored_vectors = dict(Descriptor.objects.filter(id__in=ids).values_list("id", "embedding"))
    np.testing.assert_allclose(np.stack([stored_vectors[i] for i in ids]), vectors, atol=1e-4)


def test_tagger_reads_images_through_the_storage(sample_dir, active_version, s3_storage, transactional_db):
    from recommender.services.tagging import tag_categories

    path = sample_dir / "61_6_reco.jpg"  # a bag
    item = Item(sha256="bag", original_name=path.name)
    item.image.save(path.name, ContentFile(path.read_bytes()), save=True)
    with pytest.raises(NotImplementedError):
        item.image.storage.path(item.image.name)

    outcome = tag_categories([item.id])

    # no descriptor yet, so the tagger read the file itself: through the storage (no local path exists)
    assert outcome == {"tagged": 1, "failed": 0, "from_files": 1}
    item.refresh_from_db()
    assert item.category is not None
