"""The bulk worker's layout: several pool processes, each running the model on its share of the cores
(fashionsite.launcher.embedding_processes, recommender.tasks.load_active_model). A real worker of two processes
embeds batches side by side and stores the descriptors the model computes in one process on every core."""
import os
import re
import shlex
import sys
import time
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
from django.conf import settings
from django.core.files.base import ContentFile

from recommender.models import Descriptor, Item
from recommender.services.embedding import create_pending_descriptors, send_batches
from tests.conftest import procfile_services, wait_until, worker_of_its_own

QUEUE = "pool-test"  # a queue of its own: the session's worker (one process) never takes these tasks


def test_the_pool_size_reaches_the_pool_processes():
    """worker_init runs in the worker's main process before the pool forks: the children inherit the size that
    load_active_model then splits the cores by."""
    from recommender import tasks

    before = tasks._pool_processes
    try:
        tasks.remember_pool_size(sender=SimpleNamespace(concurrency=3))
        assert tasks._pool_processes == 3
        tasks.remember_pool_size(sender=SimpleNamespace(concurrency=None))  # not known: one process
        assert tasks._pool_processes == 1
    finally:
        tasks._pool_processes = before


def test_a_worker_started_without_concurrency_runs_a_process_per_core_it_may_use(transactional_db, tmp_path):
    """The Procfile's bulk worker gives no --concurrency: its pool follows the cores of the CPU set it runs on
    (one here), as `make run` counts them, not the host's count that Celery's own default would take."""
    argv = shlex.split(procfile_services()["worker"])
    assert argv[0] == "python" and "--concurrency" not in argv
    argv[0] = sys.executable
    argv[argv.index("--queues") + 1], argv[argv.index("--hostname") + 1] = QUEUE, f"{QUEUE}-procfile@%h"
    one_core = {sorted(os.sched_getaffinity(0))[0]}
    log_path = tmp_path / "procfile-worker.log"
    environment = {"FASHIONSITE_AUTO_TAGGING": "0", "FASHIONSITE_EMBED_WORKER_PROCESSES": ""}
    with worker_of_its_own(QUEUE, log_path, command=argv, cores=one_core, **environment) as worker:
        wait_until(lambda: worker.poll() is not None or "ready." in log_path.read_text(), timeout=180,
                   message=f"the Procfile's worker starts (log: {log_path})")
        assert worker.poll() is None, log_path.read_text()[-3000:]
        assert len(psutil.Process(worker.pid).children()) == 1, log_path.read_text()[-3000:]
        assert "concurrency: 1 (prefork)" in log_path.read_text()


@pytest.fixture
def two_process_worker(transactional_db, tmp_path):
    log_path = tmp_path / "pool-worker.log"
    with worker_of_its_own(QUEUE, log_path, concurrency=2, FASHIONSITE_AUTO_TAGGING="0") as worker:
        yield worker, log_path


def _pool_loaded_and_idle(worker, processes: int) -> bool:
    """Every pool process has loaded the model (a second of CPU at least: TensorFlow and the model) and now
    waits for work. A process still loading takes no task, so the first would get both batches."""
    children = psutil.Process(worker.pid).children()
    if len(children) < processes:
        return False
    before = [sum(child.cpu_times()[:2]) for child in children]
    time.sleep(0.5)
    after = [sum(child.cpu_times()[:2]) for child in children]
    return all(end > 1.0 and end - start < 0.05 for start, end in zip(before, after))


def test_a_worker_of_two_processes_stores_the_descriptors_of_one(sample_dir, active_version, two_process_worker):
    from ml.embedding import load_embedder

    worker, log_path = two_process_worker
    files = sorted(path for path in sample_dir.iterdir() if path.suffix.lower() in {".jpg", ".jpeg"}
                   and not path.stem.endswith("part"))[:12]
    expected = {}
    for number, path in enumerate(files):
        item = Item(sha256=f"pool-{number}", original_name=path.name)
        item.image.save(path.name, ContentFile(path.read_bytes()), save=True)
        expected[create_pending_descriptors(active_version, item=item).id] = path
    ids = sorted(expected)
    wait_until(lambda: worker.poll() is not None or _pool_loaded_and_idle(worker, 2), timeout=180,
               message=f"both pool processes load the model (log: {log_path})")
    batches = [ids[:6], ids[6:]]  # sent together: each idle pool process takes one
    assert send_batches(batches, QUEUE) == 2
    succeeded = r"/(ForkPoolWorker-\d+)\] Task recommender\.tasks\.embed_descriptors\[[^]]+\] succeeded"
    # the worker's own log (in a full run the session's worker may reach pending rows too: tasks are idempotent)
    wait_until(lambda: worker.poll() is not None or len(re.findall(succeeded, log_path.read_text())) >= 2,
               timeout=300, message=f"the two-process worker runs both batches (log: {log_path})")
    assert worker.poll() is None, log_path.read_text()[-3000:]
    log = log_path.read_text()
    assert len(set(re.findall(succeeded, log))) == 2, log[-3000:]  # one batch in each process
    assert not Descriptor.objects.filter(id__in=ids).exclude(status="ready").exists()

    # the stored descriptors are the ones the model gives in this process, on every core (one thread or two:
    # the same floats, docs/RESULTS.md "Session 13")
    embedder = load_embedder(active_version.spec, settings.MODEL_CACHE_DIR)
    _, vectors, errors = embedder.embed_files([expected[i] for i in ids])
    assert not errors
    stored = dict(Descriptor.objects.filter(id__in=ids).values_list("id", "embedding"))
    np.testing.assert_allclose(np.stack([stored[i] for i in ids]), vectors, atol=1e-6)
