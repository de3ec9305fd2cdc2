"""Starts the platform's services for `make run` and `make test`, and stops what it started.

    python -m fashionsite.launcher run            Postgres, Redis, a Celery worker and the web (gunicorn); imports
                                                  the sample catalogue on the first start; Ctrl-C stops it all.
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


class Services:
    """The processes this launcher started, stopped in reverse order."""

    def __init__(self):
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.stop_postgres = False

    def spawn(self, name: str, args: list[str], **kwargs) -> subprocess.Popen:
        log(f"starting {name}: {' '.join(args)}")
        # Its own process group, so that stopping it also stops what it started (a worker's pool processes).
        process = subprocess.Popen(args, cwd=PROJECT_ROOT, start_new_session=True, **kwargs)
        self.processes.append((name, process))
        return process

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
        self.processes.clear()
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
    services.spawn("redis", args, stdout=subprocess.DEVNULL)
    for _ in range(50):
        if redis_answers(url):
            return
        time.sleep(0.1)
    raise SystemExit(f"redis-server did not answer at {url}")


def manage(*args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=PROJECT_ROOT, check=True)


def worker_command(concurrency: int = 1, beat: bool = True, queue: str = "celery") -> list[str]:
    """The Celery worker: prefork, with the model loaded in each child after the fork (recommender.tasks)."""
    args = [PYTHON, "-m", "celery", "-A", "fashionsite", "worker", "--loglevel", "INFO", "--queues", queue]
    args += ["--hostname", f"{queue}@%h", "--concurrency", str(concurrency), "--without-gossip", "--without-mingle"]
    if beat:
        args += ["--beat", "--schedule", str(data_dir() / "celerybeat-schedule")]
    return args


def web_command() -> list[str]:
    """The web server: gunicorn with fashionsite/gunicorn.conf.py (workers, threads, timeouts; the model loaded
    in each worker after the fork). It binds 127.0.0.1:$PORT."""
    return [PYTHON, "-m", "gunicorn", "--config", str(PROJECT_ROOT / "fashionsite" / "gunicorn.conf.py")]


SAMPLE_MANIFEST = PROJECT_ROOT / "data" / "labels" / "musinsa_manifest.csv"


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
        services.spawn("worker", worker_command())
        services.spawn("training worker", worker_command(beat=False, queue="training"))
        services.spawn("web", web_command(), env=dict(os.environ, PORT=port))
        set_up_catalogue(services)
        log(f"the platform is up at http://127.0.0.1:{port}/ (health: /healthz); Ctrl-C stops it")
        while not stopping:
            for name, process in services.processes:
                if name != "catalogue set-up" and process.poll() is not None:
                    log(f"{name} exited with {process.returncode}; stopping")
                    return 1
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
