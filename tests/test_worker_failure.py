"""A worker process that dies mid-task leaves its work to be picked up again (late acks, reject on worker
lost, idempotent tasks): every descriptor still ends up ready."""
import signal
import time

import psutil
import pytest
from django.core.management import call_command

from fashionsite.celery import app
from recommender.models import Descriptor
from tests.conftest import copy_looks, wait_until


def test_killed_pool_process_loses_no_work(sample_dir, tmp_path, transactional_db, active_version,
                                            celery_worker_process):
    call_command("import_looks", str(copy_looks(sample_dir, (0, 5, 6, 15), tmp_path / "looks")), verbosity=0)
    total = Descriptor.objects.count()

    def busy_child():
        active = app.control.inspect(timeout=0.2).active() or {}
        if any(tasks for tasks in active.values()):
            children = psutil.Process(celery_worker_process.pid).children()
            return children[0] if children else None
        return None

    child = wait_until(busy_child, timeout=60, interval=0.05, message="the worker starts a task")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    killed_at = time.monotonic()

    wait_until(lambda: Descriptor.objects.filter(status=Descriptor.Status.READY).count() == total,
               timeout=300, message="the killed task's images are embedded by the replacement process")
    assert not Descriptor.objects.filter(status=Descriptor.Status.FAILED).exists()
    assert time.monotonic() - killed_at < 300
