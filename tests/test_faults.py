"""Faults are recovered without a person (issue 10): the launcher restarts a killed service with backoff and
leaves the others running; while Redis is down the platform keeps answering and uploads wait pending in the
database, queued by the reconciler once Redis is back; an image whose task kills its worker again and again
ends failed after a bounded number of tries; the reconciler never sends twice what is still on its way."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis
import requests
from django.utils import timezone

from fashionsite import launcher
from fashionsite.celery import app
from fashionsite.paths import PROJECT_ROOT
from recommender.models import Descriptor
from recommender.services.embedding import MAX_ATTEMPTS
from tests.conftest import _database_url_for_tests, copy_looks, wait_until

LOOKS = (0, 15)


# ------------------------------------------------------------------------------------------- supervision


def test_supervisor_restarts_a_killed_redis_with_backoff(tmp_path, monkeypatch):
    """A real redis-server started as `make run` starts it; killed twice, it is restarted each time (the second
    time, soon after its start, only after a backoff)."""
    monkeypatch.setenv("FASHIONSITE_DATA_DIR", str(tmp_path))
    url = f"redis://127.0.0.1:{launcher.free_port()}/0"
    monkeypatch.setenv("REDIS_URL", url)
    services = launcher.Services()
    try:
        launcher.ensure_redis(services, persistent=True)
        client = redis.Redis.from_url(url)
        client.set("survives", "yes")  # the append-only file keeps it across the restart
        first = services.processes[0][1].pid

        os.kill(first, signal.SIGKILL)
        restarted = wait_until(lambda: _supervised_pid(services, "redis", not_pid=first), timeout=10,
                               interval=0.1, message="the killed Redis is started again")
        wait_until(lambda: launcher.redis_answers(url), timeout=10, interval=0.1, message="Redis answers again")
        assert client.get("survives") == b"yes"

        os.kill(restarted, signal.SIGKILL)  # dies again right after its start: restarted after a backoff
        killed_at = time.monotonic()
        wait_until(lambda: _supervised_pid(services, "redis", not_pid=restarted), timeout=10, interval=0.1,
                   message="Redis is started a third time")
        assert time.monotonic() - killed_at >= 0.9, "a service that keeps dying is restarted with a backoff"
        wait_until(lambda: launcher.redis_answers(url), timeout=10, interval=0.1, message="Redis answers again")
    finally:
        services.stop()


def _supervised_pid(services, name, not_pid):
    services.supervise()
    for service in services.services:
        if service.name == name and service.process.pid != not_pid and service.process.poll() is None:
            return service.process.pid
    return None


# ------------------------------------------------------------------------------------- the whole platform


@pytest.fixture
def external_redis(tmp_path):
    """A Redis the test starts and stops itself (as one on another host would be): the launcher reuses it."""
    port = launcher.free_port()
    args = [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
            "--appendonly", "yes", "--save", ""]

    class ExternalRedis:
        url = f"redis://127.0.0.1:{port}/0"
        process = None

        def start(self):
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
            wait_until(lambda: launcher.redis_answers(self.url), timeout=10, interval=0.1, message="Redis starts")

        def kill(self):
            self.process.kill()
            self.process.wait()

    external = ExternalRedis()
    external.start()
    yield external
    external.kill()


@pytest.fixture
def platform(sample_dir, tmp_path, transactional_db, active_version, external_redis):
    """`python -m fashionsite.launcher run` on the test database, its own data directory, port and Redis, with a
    two-look catalogue imported on its first start."""
    port = launcher.free_port()
    env = dict(
        os.environ, DATABASE_URL=_database_url_for_tests(), FASHIONSITE_DATA_DIR=str(tmp_path / "data"),
        REDIS_URL=external_redis.url, PORT=str(port), FASHIONSITE_AUTO_TAGGING="0",
        SAMPLE_CATALOGUE=str(copy_looks(sample_dir, LOOKS, tmp_path / "catalogue")),
    )
    log_path = tmp_path / "launcher.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "fashionsite.launcher", "run"], cwd=PROJECT_ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _healthy(base) and _catalogue_embedded(), timeout=400,
                       message=f"the platform starts and embeds its catalogue (log: {log_path})")
            yield type("Platform", (), {"url": base, "process": process, "log": log_path})
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _healthy(base):
    try:
        return requests.get(f"{base}/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _catalogue_embedded():
    rows = Descriptor.objects.filter(wardrobe_item__isnull=True)
    return rows.exists() and not rows.exclude(status="ready").exists()


def _service_pid(platform, cmdline_part: str) -> int | None:
    for child in psutil.Process(platform.process.pid).children():
        try:
            if cmdline_part in " ".join(child.cmdline()):
                return child.pid
        except psutil.NoSuchProcess:
            pass
    return None


def _upload(base, token, path: Path):
    with path.open("rb") as handle:
        return requests.post(f"{base}/api/wardrobe/items/", files={"image": (path.name, handle, "image/jpeg")},
                             headers={"Authorization": f"Token {token}"}, timeout=30)


def _search(base, path: Path):
    with path.open("rb") as handle:
        return requests.post(f"{base}/api/search/items/", files={"image": (path.name, handle, "image/jpeg")},
                             timeout=30)


def test_platform_survives_redis_worker_and_web_faults(platform, external_redis, sample_dir, django_user_model):
    from rest_framework.authtoken.models import Token

    user = django_user_model.objects.create_user("faulty", password="a-long-password-1")
    token = Token.objects.create(user=user).key
    snapshot = sample_dir / "3_0_part.jpg"

    # --- Redis down: pages and search answer, health names Redis, an upload is accepted and stays pending
    external_redis.kill()
    health = requests.get(f"{platform.url}/healthz", timeout=10)
    assert health.status_code == 503 and health.json()["down"] == ["redis"]
    assert requests.get(f"{platform.url}/", timeout=30).status_code == 200
    assert requests.get(f"{platform.url}/looks/", timeout=30).status_code == 200
    assert _search(platform.url, snapshot).status_code == 200
    started = time.monotonic()
    response = _upload(platform.url, token, sample_dir / "3_0_reco.jpg")
    assert response.status_code == 202, response.text
    assert time.monotonic() - started < 10, "an upload does not hang on the broker"
    upload_id = response.json()["id"]
    time.sleep(3)
    descriptor = Descriptor.objects.get(wardrobe_item_id=upload_id)
    assert descriptor.status == "pending" and descriptor.queued_at is None  # stored, waiting in the database

    # --- Redis back: the pending upload is queued (no beat needed) and embedded within a minute
    external_redis.start()
    back_at = time.monotonic()
    wait_until(lambda: Descriptor.objects.get(wardrobe_item_id=upload_id).status == "ready", timeout=90,
               message="the upload stored while Redis was down is embedded once it is back")
    assert time.monotonic() - back_at < 90
    assert _healthy(platform.url)

    # --- the interactive worker killed: restarted, and the next upload is embedded
    worker = _service_pid(platform, "--queues interactive")
    assert worker is not None
    os.killpg(worker, signal.SIGKILL)
    wait_until(lambda: (_service_pid(platform, "--queues interactive") or worker) != worker, timeout=30,
               message="the launcher restarts the killed worker")
    second = _upload(platform.url, token, sample_dir / "15_0_reco.jpg")
    assert second.status_code == 202
    wait_until(lambda: Descriptor.objects.get(wardrobe_item_id=second.json()["id"]).status == "ready",
               timeout=180, message="the restarted worker embeds the next upload")

    # --- the web killed: the others keep running, and the web answers again
    web = _service_pid(platform, "manage.py runserver") or _service_pid(platform, "gunicorn")
    bulk = _service_pid(platform, "--queues celery")
    os.killpg(web, signal.SIGKILL)
    wait_until(lambda: _healthy(platform.url), timeout=120, message="the launcher restarts the killed web")
    assert _service_pid(platform, "--queues celery") == bulk, "the web's death did not touch the worker"
    assert platform.process.poll() is None


# ---------------------------------------------------------------------------------------- bounded tries


def test_an_image_that_kills_its_worker_ends_failed_after_bounded_tries(
    sample_dir, tmp_path, transactional_db, active_version, celery_worker_process
):
    """Every time a worker starts on the image, its pool process is killed mid-embedding (as a decoder crash
    would do): after MAX_ATTEMPTS tries the image is failed with the reason, and the queue goes on."""
    import numpy as np
    from PIL import Image

    from recommender.services.catalogue import ImportEntry, entries_from_folder, import_entries

    # a 39-megapixel PNG: decoding it takes long enough to kill the worker while it is busy with it
    side = 6250
    ramp = np.linspace(0, 255, side, dtype=np.uint8)
    pixels = np.stack([np.broadcast_to(ramp, (side, side)), np.broadcast_to(ramp[:, None], (side, side)),
                       np.full((side, side), 90, np.uint8)], axis=-1)
    poison_file = tmp_path / "1_0_reco.png"
    Image.fromarray(pixels).save(poison_file, compress_level=1)
    import_entries([ImportEntry(look="1", role="item", path=poison_file)])
    poison = Descriptor.objects.get()

    for attempt in range(1, MAX_ATTEMPTS + 1):
        wait_until(lambda: Descriptor.objects.get(pk=poison.pk).attempts >= attempt, timeout=180, interval=0.02,
                   message=f"a worker starts on the image (try {attempt})")
        for child in psutil.Process(celery_worker_process.pid).children():
            child.kill()
    wait_until(lambda: Descriptor.objects.get(pk=poison.pk).status == "failed", timeout=180,
               message="the image is given up after its tries")
    poison.refresh_from_db()
    assert poison.attempts == MAX_ATTEMPTS
    assert f"gave up after {MAX_ATTEMPTS} tries" in poison.error

    # the queue is not blocked: the next image is embedded
    folder = copy_looks(sample_dir, (0,), tmp_path / "next")
    import_entries([e for e in entries_from_folder(folder) if e.path.name == "0_0_part.jpg"])
    wait_until(lambda: Descriptor.objects.filter(status="ready").count() == 1, timeout=180,
               message="the next image is embedded")


# ------------------------------------------------------------------------------------------ no duplicates


def test_reconciler_never_resends_what_is_on_its_way(transactional_db, active_version, sample_dir, tmp_path):
    """With no worker consuming, pending rows already queued are not sent again (however often it runs), rows
    never sent are sent once, and rows whose messages were lost (queue empty, sent long ago) are sent again."""
    from recommender.services.catalogue import entries_from_folder, import_entries
    from recommender.services.reconcile import STALE_AFTER, reconcile
    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue = "celery"
    app.control.purge()
    folder = copy_looks(sample_dir, LOOKS, tmp_path / "looks")
    with _paused_consumers(queue):
        import_entries(entries_from_folder(folder))
        total = Descriptor.objects.count()
        queued = client.llen(queue)
        assert queued == -(-total // 32) and Descriptor.objects.filter(queued_at__isnull=True).count() == 0

        for _ in range(3):  # the old periodic task re-sent every pending row each time
            reconcile()
        assert client.llen(queue) == queued, "nothing on its way is sent twice"

        Descriptor.objects.filter(pk=Descriptor.objects.first().pk).update(queued_at=None)  # never sent
        reconcile()
        assert client.llen(queue) == queued + 1

        client.delete(queue)  # the messages are lost (e.g. Redis restarted without its data)
        Descriptor.objects.update(queued_at=timezone.now() - STALE_AFTER * 2)
        reconcile()
        assert client.llen(queue) == -(-total // 32), "lost work is sent again, once"
        reconcile()
        assert client.llen(queue) == -(-total // 32)
        client.delete(queue)


class _paused_consumers:
    """Stops the session's worker (if any) consuming `queue` for the block, so messages can be counted."""

    def __init__(self, queue):
        self.queue = queue

    def __enter__(self):
        app.control.cancel_consumer(self.queue, reply=True, timeout=2)
        return self

    def __exit__(self, *exc):
        app.control.add_consumer(self.queue, reply=True, timeout=2)


def test_a_training_job_that_could_not_be_queued_is_sent_by_the_reconciler(transactional_db, active_version):
    """`ensure_trained_model` while Redis is down leaves the job queued and unsent; the reconciler sends it once
    (no worker consumes the training queue in the tests, so the message can be counted)."""
    from django.conf import settings

    from recommender.models import TrainingJob
    from recommender.services.reconcile import reconcile

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete("training")
    job = TrainingJob.objects.create()  # as if the send had failed: queued, never sent
    reconcile()
    job.refresh_from_db()
    assert job.queued_at is not None and client.llen("training") == 1
    reconcile()
    assert client.llen("training") == 1, "a job on its way is not sent twice"
    client.delete("training")


def test_a_training_job_whose_worker_died_is_queued_again_then_given_up(transactional_db, active_version):
    """A running job whose heartbeat stopped (its worker was killed) is queued and sent again by the reconciler
    while it has tries left, and failed once they are used up; a job whose worker is alive is left alone."""
    from datetime import timedelta

    from django.conf import settings

    from recommender.models import TrainingJob
    from recommender.services.reconcile import reconcile
    from recommender.services.training import HEARTBEAT_STALE_AFTER, MAX_TRAINING_ATTEMPTS

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete("training")
    now = timezone.now()
    silent = now - HEARTBEAT_STALE_AFTER - timedelta(seconds=5)
    alive = TrainingJob.objects.create(state=TrainingJob.State.RUNNING, attempts=1, heartbeat=now, queued_at=silent)
    died = TrainingJob.objects.create(state=TrainingJob.State.RUNNING, attempts=1, heartbeat=silent, queued_at=silent)

    reconcile()
    died.refresh_from_db(), alive.refresh_from_db()
    assert died.state == TrainingJob.State.QUEUED and died.queued_at > silent, "queued and sent again"
    assert client.llen("training") == 1
    assert alive.state == TrainingJob.State.RUNNING

    # its worker dies in every try: after the last one the job fails instead of looping
    TrainingJob.objects.filter(pk=died.pk).update(
        state=TrainingJob.State.RUNNING, attempts=MAX_TRAINING_ATTEMPTS, heartbeat=silent)
    reconcile()
    died.refresh_from_db()
    assert died.state == TrainingJob.State.FAILED and f"{MAX_TRAINING_ATTEMPTS} tries" in died.message
    assert client.llen("training") == 1, "nothing more was sent"
    client.delete("training")


def test_a_training_try_is_claimed_once_and_keeps_a_heartbeat(transactional_db, active_version, monkeypatch):
    """A redelivered training message leaves a job another worker is training alone; a job out of tries fails
    instead of starting again; a running try refreshes its heartbeat."""
    from recommender.models import TrainingJob
    from recommender.services import training

    alive = TrainingJob.objects.create(state=TrainingJob.State.RUNNING, attempts=1, heartbeat=timezone.now())
    assert training.claim(alive.pk) is None
    alive.refresh_from_db()
    assert alive.state == TrainingJob.State.RUNNING and alive.attempts == 1

    spent = TrainingJob.objects.create(attempts=training.MAX_TRAINING_ATTEMPTS)
    assert training.claim(spent.pk) is None
    assert TrainingJob.objects.get(pk=spent.pk).state == TrainingJob.State.FAILED

    job = training.claim(TrainingJob.objects.create().pk)
    assert job.state == TrainingJob.State.RUNNING and job.attempts == 1
    monkeypatch.setattr(training, "HEARTBEAT_EVERY", 0.1)
    started = job.heartbeat
    with training.heartbeat(job.pk):
        wait_until(lambda: TrainingJob.objects.get(pk=job.pk).heartbeat > started, timeout=10,
                   message="the heartbeat is refreshed while the try runs")


def test_lost_tagging_is_sent_again_by_the_reconciler_then_given_up(
    sample_dir, tmp_path, transactional_db, active_version, celery_worker_process
):
    """An image's tagging stays outstanding on its descriptor until the task has run. A task that was lost (its
    message gone with Redis, or its worker killed on it) is sent again by the reconciler once its queue is
    empty, and the image ends tagged; after MAX_ATTEMPTS sends it is given up instead of looping."""
    from django.conf import settings

    from recommender.models import Item
    from recommender.services.catalogue import entries_from_folder, import_entries
    from recommender.services.reconcile import STALE_AFTER, reconcile

    folder = copy_looks(sample_dir, (0,), tmp_path / "looks")
    import_entries(entries_from_folder(folder))
    wait_until(lambda: not Descriptor.objects.exclude(status="ready").exists()
               and not Descriptor.objects.filter(tagging_sent_at__isnull=False).exists()
               and not Item.objects.filter(category__isnull=True).exists(),
               timeout=180, message="the look is embedded and its items tagged, nothing outstanding")
    row = Descriptor.objects.filter(item__isnull=False).first()
    assert row.tagging_attempts == 1, "the receiver queued its tagging once"

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    lost = {"tagging_sent_at": timezone.now() - STALE_AFTER * 2}
    with _paused_consumers("celery"):
        Item.objects.filter(pk=row.item_id).update(category=None, category_source="", category_confidence=None)
        Descriptor.objects.filter(pk=row.pk).update(**lost)  # sent long ago, and its message is gone
        reconcile()
        assert client.llen("celery") == 1, "the lost tagging is sent again"
        reconcile()
        assert client.llen("celery") == 1, "a tagging on its way is not sent twice"
        row.refresh_from_db()
        assert row.tagging_attempts == 2 and row.tagging_sent_at is not None
    wait_until(lambda: Item.objects.get(pk=row.item_id).category_id is not None
               and Descriptor.objects.get(pk=row.pk).tagging_sent_at is None,
               timeout=120, message="the worker tags the image and its tagging is done")

    with _paused_consumers("celery"):
        Item.objects.filter(pk=row.item_id).update(category=None, category_source="", category_confidence=None)
        Descriptor.objects.filter(pk=row.pk).update(tagging_attempts=MAX_ATTEMPTS, **lost)
        reconcile()
        assert client.llen("celery") == 0, "an image tried MAX_ATTEMPTS times is not sent again"
        assert Descriptor.objects.get(pk=row.pk).tagging_sent_at is None
        assert Item.objects.get(pk=row.item_id).category_id is None
