"""Fixtures shared by the suite: the real sample data, the active model version, a real Celery worker process.

`make test` (fashionsite.launcher test) has already started the embedded Postgres and a Redis for the tests.
"""
import csv
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from fashionsite.paths import PROJECT_ROOT

SAMPLE_DIR = PROJECT_ROOT.parent / "shared" / "data" / "musinsa" / "dev"
VAL_LOOKS = SAMPLE_DIR.parent / "val_looks.txt"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not SAMPLE_DIR.is_dir():
        pytest.fail(f"the sample catalogue is missing: {SAMPLE_DIR} (tests read the real data from ../shared)")
    return SAMPLE_DIR


def copy_looks(sample_dir: Path, looks, target: Path) -> Path:
    """Copies every file of the given looks from the sample data into `target` (a test's own small folder)."""
    target.mkdir(parents=True, exist_ok=True)
    prefixes = tuple(f"{look}_" for look in looks)
    for path in sample_dir.iterdir():
        if path.name.startswith(prefixes):
            (target / path.name).write_bytes(path.read_bytes())
    return target


def write_manifest(folder: Path, target: Path, styles=None, categories=None) -> Path:
    """A manifest CSV (`look,role,path,style,category`) for every sample file in `folder`: `styles` maps a look
    key to its style, `categories` a file name to its category (both optional, empty where absent)."""
    styles, categories = styles or {}, categories or {}
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["look", "role", "path", "style", "category"])
        for path in sorted(folder.iterdir()):
            look, _, kind = path.stem.split("_")
            role = "snapshot" if kind == "part" else "item"
            writer.writerow([look, role, path.name, styles.get(look, ""), categories.get(path.name, "")])
    return target


@pytest.fixture
def active_version(db):
    """The untrained backbone as the active version (transactional tests flush the migration's row)."""
    from recommender.services.versions import DEFAULT_VERSION, register_version

    return register_version(**DEFAULT_VERSION)


def _database_url_for_tests() -> str:
    from django.db import connection

    params = connection.settings_dict
    host = params["OPTIONS"].get("host") or params["HOST"]
    return f"postgresql://{params['USER']}@/{params['NAME']}?host={host}"


@pytest.fixture(scope="session")
def _celery_worker_session(django_db_setup, django_db_blocker):
    """A real `celery worker` process on the test database and the test Redis, stopped after the session. It
    consumes the bulk and the interactive queues (`make run` gives each its own worker process)."""
    from fashionsite.celery import app
    from fashionsite.launcher import worker_command

    with django_db_blocker.unblock():
        env = dict(os.environ, DATABASE_URL=_database_url_for_tests())
    app.control.purge()
    log_path = Path(os.environ.get("FASHIONSITE_DATA_DIR", PROJECT_ROOT / "var" / "test")) / "test-worker.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        worker_command(concurrency=1, beat=False, queue="celery,interactive"), cwd=PROJECT_ROOT, env=env,
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not (app.control.inspect(timeout=1).ping() or {}):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the Celery worker did not start; see {log_path}:\n{log_path.read_text()[-3000:]}")
    yield process
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@contextmanager
def worker_of_its_own(queue: str, log_path: Path, concurrency: int = 1, command=None, cores=None, **environment):
    """A real `celery worker` process on the test database that consumes only `queue` (so the session's worker
    never takes its tasks), with `environment` added to its settings; stopped on exit. Yields the process.
    `command`: another worker command line (argv) for the same queue; `cores`: the CPU set it may run on."""
    from fashionsite.launcher import worker_command

    env = dict(os.environ, DATABASE_URL=_database_url_for_tests(), **environment)
    command = command or worker_command(concurrency=concurrency, beat=False, queue=queue)
    with log_path.open("w") as log:
        worker = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  preexec_fn=None if cores is None else lambda: os.sched_setaffinity(0, cores))
        try:
            yield worker
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()


def _worker_is_idle() -> bool:
    import redis
    from django.conf import settings

    from fashionsite.celery import app

    inspector = app.control.inspect(timeout=0.5)
    busy = [tasks for reply in (inspector.active() or {}, inspector.reserved() or {}) for tasks in reply.values()]
    client = redis.Redis.from_url(settings.REDIS_URL)
    queued = client.llen("celery") + client.llen("interactive")
    return not any(busy) and queued == 0


@pytest.fixture
def celery_worker_process(transactional_db, _celery_worker_session):
    """The session's worker for one test. Afterwards it waits until the worker is idle, so that no follow-up
    task (tagging, suggestions) still writes while the test database is flushed."""
    yield _celery_worker_session
    deadline = time.monotonic() + 120
    idle_checks = 0
    while idle_checks < 2 and time.monotonic() < deadline:
        idle_checks = idle_checks + 1 if _worker_is_idle() else 0
        time.sleep(0.3)


def procfile_services() -> dict[str, str]:
    """The Procfile's services: name -> command line."""
    return dict(
        line.split(":", 1) for line in (PROJECT_ROOT / "Procfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )


def wait_until(condition, timeout: float, message: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s: {message}")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def gunicorn_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """The production web server, as `make run` starts it (fashionsite/gunicorn.conf.py, DEBUG off, hashed static
    files collected and served by WhiteNoise), on the test database, one worker; yields its base URL. The model
    is not warmed (FASHIONSITE_WARM_MODEL=0): a search that reaches it loads it."""
    import requests

    from fashionsite.launcher import web_command

    with django_db_blocker.unblock():
        database_url = _database_url_for_tests()
    static_root = tmp_path_factory.mktemp("static")
    port = free_port()
    env = dict(
        os.environ, DATABASE_URL=database_url, PORT=str(port), FASHIONSITE_STATIC_MANIFEST="1",
        FASHIONSITE_STATIC_ROOT=str(static_root), FASHIONSITE_DEBUG="0", FASHIONSITE_WEB_WORKERS="1",
        FASHIONSITE_WEB_THREADS="4", FASHIONSITE_WARM_MODEL="0", FASHIONSITE_ACCESS_LOG="",
    )
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"], cwd=PROJECT_ROOT, env=env, check=True
    )
    log_path = Path(os.environ.get("FASHIONSITE_DATA_DIR", PROJECT_ROOT / "var" / "test")) / "test-gunicorn.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        web_command(), cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            requests.get(url + "/api/schema/", timeout=60)  # the first answer loads Django's URLs and the schema
            break
        except (requests.ConnectionError, requests.Timeout):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"gunicorn did not start; see {log_path}:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()
