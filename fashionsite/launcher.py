"""Starts the platform's services for `make run` and `make test`, and stops what it started.

    python -m fashionsite.launcher run            Postgres, Redis, a Celery worker per queue, the reconciler
                                                  and the web (gunicorn), each restarted with backoff when it
                                                  dies; imports the sample catalogue on the first start;
                                                  Ctrl-C stops it all.
    python -m fashionsite.launcher test [ARGS]    Postgres and Redis for the test suite, then pytest ARGS.

Postgres is the embedded server (unless DATABASE_URL is set); Redis is started from Debian's redis-server
unless something already answers at REDIS_URL. Services that were already running are reused and left running.
Imports nothing from Django: it runs before the database exists.
"""
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

from fashionsite import database
from fashionsite.paths import PROJECT_ROOT, data_dir, sample_catalogue_dir

PYTHON = sys.executable
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def log(message: str) -> None:
    print(f"[fashionsite] {message}", flush=True)


class Service:
    """One supervised process: how to start it, and its restart bookkeeping."""

    def __init__(self, name: str, args: list[str], supervised: bool, **kwargs):
        self.name, self.args, self.supervised, self.kwargs = name, args, supervised, kwargs
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.failures = 0  # exits in a row that came soon after a start
        self.restart_at: float | None = None

    def start(self) -> subprocess.Popen:
        log(f"starting {self.name}: {' '.join(self.args)}")
        # Its own process group, so that stopping it also stops what it started (a worker's pool processes).
        self.process = subprocess.Popen(self.args, cwd=PROJECT_ROOT, start_new_session=True, **self.kwargs)
        self.started_at = time.monotonic()
        self.restart_at = None
        return self.process


class Services:
    """The processes this launcher started, stopped in reverse order. Supervised ones (`make run`'s Redis,
    workers, reconciler and web) are restarted when they exit, with a backoff that doubles from 1 s up to
    MAX_BACKOFF while a service keeps exiting soon after its start; one service's death never stops the others.
    """

    MAX_BACKOFF = 30.0
    HEALTHY_AFTER = 60.0  # a service that ran this long before exiting restarts at once (its backoff resets)

    def __init__(self):
        self.services: list[Service] = []
        self.stop_postgres = False

    @property
    def processes(self) -> list[tuple[str, subprocess.Popen]]:
        return [(service.name, service.process) for service in self.services if service.process is not None]

    def spawn(self, name: str, args: list[str], supervised: bool = False, **kwargs) -> subprocess.Popen:
        service = Service(name, args, supervised, **kwargs)
        self.services.append(service)
        return service.start()

    def supervise(self) -> None:
        """One round: restarts supervised services that exited, once their backoff has passed."""
        now = time.monotonic()
        for service in self.services:
            if not service.supervised or service.process is None or service.process.poll() is None:
                continue
            if service.restart_at is None:
                ran = now - service.started_at
                service.failures = 0 if ran >= self.HEALTHY_AFTER else service.failures + 1
                delay = 0.0 if service.failures == 0 else min(self.MAX_BACKOFF, 2.0 ** (service.failures - 1))
                _signal_group(service.process, signal.SIGKILL)  # what is left of its group (pool processes)
                service.restart_at = now + delay
                log(f"{service.name} exited with {service.process.returncode} after {ran:.0f} s; "
                    f"restarting it in {delay:.0f} s")
            if now >= service.restart_at:
                service.start()

    def stop_service(self, name: str) -> None:
        """Stops one service (and its process group) and forgets it."""
        for service in [s for s in self.services if s.name == name]:
            _signal_group(service.process, signal.SIGTERM)
            try:
                service.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(service.process, signal.SIGKILL)
            service.process.wait()
            self.services.remove(service)

    def stop(self) -> None:
        for name, process in reversed(self.processes):
            if process.poll() is None:
                log(f"stopping {name}")
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in 20 s; killing it")
            _signal_group(process, signal.SIGKILL)  # what is left of the group (e.g. a busy pool process)
            process.wait()
        self.services.clear()
        if self.stop_postgres:
            stopped = database.stop_embedded_server(data_dir())
            log("stopped postgres" if stopped else "left postgres running: another process is using it")


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def ensure_postgres(services: Services) -> None:
    if os.environ.get("DATABASE_URL"):
        log("using the Postgres server at DATABASE_URL")
        return
    was_running = database.embedded_server_running(data_dir())
    database.embedded_server(data_dir())
    services.stop_postgres = not was_running
    log(f"postgres {'reused' if was_running else 'started'} (data in {data_dir() / 'postgres'})")


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except Exception:
        return False


def ensure_redis(services: Services, persistent: bool) -> None:
    url = os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_answers(url):
        log(f"redis reused at {url}")
        return
    parsed = urlparse(url)
    if parsed.hostname not in LOOPBACK:
        raise SystemExit(f"Redis at {url} does not answer, and it is not on this machine to start it")
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed: run `apt-get install redis-server` (make does this)")
    redis_dir = data_dir() / "redis"
    redis_dir.mkdir(exist_ok=True)
    args = [server, "--port", str(parsed.port or 6379), "--bind", "127.0.0.1", "--dir", str(redis_dir)]
    args += ["--appendonly", "yes" if persistent else "no", "--save", ""]
    # supervised under `make run` (persistent): restarted with its append-only file, the queues survive
    services.spawn("redis", args, supervised=persistent, stdout=subprocess.DEVNULL)
    for _ in range(50):
        if redis_answers(url):
            return
        time.sleep(0.1)
    raise SystemExit(f"redis-server did not answer at {url}")


def manage(*args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=PROJECT_ROOT, check=True)


def embedding_processes() -> int:
    """Pool processes of the bulk (embedding) worker: FASHIONSITE_EMBED_WORKER_PROCESSES, by default one per core.
    Each runs the model on one thread: on 2 cores, 2 processes of one thread embed a re-embedding 1.1-1.4x as fast
    as one process of two (docs/RESULTS.md, "Session 13"), for a second copy of the model in
    memory (~0.75 GB)."""
    from ml.cores import available_cores

    return max(1, int(os.environ.get("FASHIONSITE_EMBED_WORKER_PROCESSES") or available_cores()))


def worker_command(concurrency: int = 1, beat: bool = True, queue: str = "celery") -> list[str]:
    """The Celery worker of `queue` (comma-separated names for several): prefork, with the model loaded in each
    child after the fork (recommender.tasks). The queues are named in fashionsite.queueing."""
    args = [PYTHON, "-m", "celery", "-A", "fashionsite", "worker", "--loglevel", "INFO", "--queues", queue]
    name = queue.split(",")[0]
    args += ["--hostname", f"{name}@%h", "--concurrency", str(concurrency), "--without-gossip", "--without-mingle"]
    if beat:
        args += ["--beat", "--schedule", str(data_dir() / "celerybeat-schedule")]
    return args


def web_command() -> list[str]:
    """The web server: gunicorn with fashionsite/gunicorn.conf.py (workers, threads, timeouts; the model loaded
    in each worker after the fork). It binds 127.0.0.1:$PORT."""
    return [PYTHON, "-m", "gunicorn", "--config", str(PROJECT_ROOT / "fashionsite" / "gunicorn.conf.py")]


SAMPLE_MANIFEST = PROJECT_ROOT / "data" / "labels" / "musinsa_manifest.csv"


RECONCILE_EVERY = "10"  # seconds: pending work is queued this soon after Redis answers again


def start_platform(services: Services, port: str) -> None:
    """The supervised services of `make run`: a worker per queue (fashionsite.queueing), the reconciler, the
    web. Each one that dies is restarted on its own (Services.supervise)."""
    services.spawn("worker", worker_command(concurrency=embedding_processes()), supervised=True)  # bulk embedding, and the beat
    services.spawn("interactive worker", worker_command(beat=False, queue="interactive"), supervised=True)
    services.spawn("training worker", worker_command(beat=False, queue="training"), supervised=True)
    services.spawn("reconciler", [PYTHON, "manage.py", "reconcile", "--every", RECONCILE_EVERY], supervised=True)
    services.spawn("web", web_command(), supervised=True,
                   env=dict(os.environ, PORT=port, FASHIONSITE_WARM_MODEL="1"))


def set_up_catalogue(services: Services) -> None:
    """On the first start, imports the sample catalogue (with its hand-labelled styles and categories when the
    folder is the sample one); on every start, queues the background training if no trained model exists."""
    steps = []
    marker = data_dir() / ".sample-catalogue-imported"
    folder = sample_catalogue_dir()
    if not marker.exists():
        if folder.is_dir():
            log(f"first start: importing the sample catalogue from {folder}")
            marker.write_text(str(folder))
            sample = "SAMPLE_CATALOGUE" not in os.environ and SAMPLE_MANIFEST.exists()
            manifest = ["--manifest", str(SAMPLE_MANIFEST)] if sample else []
            steps.append([PYTHON, "manage.py", "import_looks", str(folder), *manifest])
        else:
            log(f"no sample catalogue at {folder}: starting with an empty catalogue (set SAMPLE_CATALOGUE)")
    steps.append([PYTHON, "manage.py", "ensure_trained_model"])
    script = " && ".join(" ".join(shlex.quote(arg) for arg in step) for step in steps)
    services.spawn("catalogue set-up", ["bash", "-c", script])


def run() -> int:
    services = Services()
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        ensure_postgres(services)
        ensure_redis(services, persistent=True)
        manage("migrate", "--no-input")
        manage("collectstatic", "--no-input", "-v", "0")
        port = os.environ.get("PORT", "8000")
        start_platform(services, port)
        set_up_catalogue(services)
        log(f"the platform is up at http://127.0.0.1:{port}/ (health: /healthz); Ctrl-C stops it")
        while not stopping:
            services.supervise()
            time.sleep(0.5)
        return 0
    finally:
        services.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test(pytest_args: list[str]) -> int:
    """Runs pytest against its own Redis (a free port) and its own test database, so that two test runs on one
    machine (two developers, or a developer and CI) never share a queue or a database."""
    os.environ.setdefault("FASHIONSITE_DATA_DIR", str(PROJECT_ROOT / "var" / "test"))
    os.environ.setdefault("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    os.environ.setdefault("FASHIONSITE_TEST_RUN", str(os.getpid()))
    os.environ.setdefault("FASHIONSITE_STATIC_MANIFEST", "0")  # live servers serve the source static files
    services = Services()
    try:
        ensure_postgres(services)
        ensure_redis(services, persistent=False)
        return subprocess.run([PYTHON, "-m", "pytest", *pytest_args], cwd=PROJECT_ROOT).returncode
    finally:
        services.stop()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__)
        return 2
    return run() if argv[0] == "run" else test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
