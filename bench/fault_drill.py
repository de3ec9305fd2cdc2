"""Fault drill: against a running platform (`make run`), kills Redis, the workers and the web in turn while
uploads and searches go on, and prints what it did, how long each recovery took, and whether every upload
ended ready.

    .venv/bin/python bench/fault_drill.py [--url http://127.0.0.1:8000] [--sample DIR]

Loopback only. It finds the platform's processes from the web port: the process listening on it is the web,
its parent the launcher, the launcher's children the workers and (if the launcher started it) Redis; it kills
nothing else. Each fault is a SIGKILL of the service's whole process group (a worker dies mid-batch with its pool
processes). A recovery is timed from the kill until the platform does again what the service is for:
    redis               /healthz answers 200 again (the launcher restarted Redis), and an upload made while
                        it was down is ready
    interactive worker  a new one runs and an upload made after the kill is ready
    bulk worker         a new one runs (with the beat) and answers a ping
    web                 /healthz answers 200 again
Throughout, one client uploads a wardrobe photo every 2 s and another searches every 0.5 s; the drill prints how
many of each failed in each fault's window. At the end it waits until every upload is ready (or failed) and
prints the counts.
"""
import argparse
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "data" / "musinsa" / "dev"


class Load:
    """Uploads and searches in two threads, recording each request's outcome with its time."""

    def __init__(self, url: str, token: str, images: list[Path]):
        self.url, self.token, self.images = url, token, images
        self.uploads: list[int] = []
        self.events: list[tuple[float, str, bool]] = []  # (time, kind, ok)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.upload_loop, daemon=True),
                        threading.Thread(target=self.search_loop, daemon=True)]

    def start(self):
        for thread in self.threads:
            thread.start()

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _post_image(self, endpoint: str):
        """POSTs a random sample image to `endpoint` as the signed-in user; the response, or None if none came."""
        path = random.choice(self.images)
        try:
            with path.open("rb") as handle:
                return requests.post(f"{self.url}{endpoint}", timeout=30,
                                     headers={"Authorization": f"Token {self.token}"},
                                     files={"image": (path.name, handle, "image/jpeg")})
        except requests.RequestException:
            return None

    def upload(self) -> int | None:
        response = self._post_image("/api/wardrobe/items/")
        ok = response is not None and response.status_code == 202
        if ok:
            try:
                self.uploads.append(response.json()["id"])
            except requests.RequestException:  # a 202 without its JSON body counts as a failed upload
                ok = False
        self.events.append((time.monotonic(), "upload", ok))
        return self.uploads[-1] if ok else None

    def upload_loop(self):
        while not self.stopping.wait(2.0):
            self.upload()

    def search_loop(self):
        while not self.stopping.wait(0.5):
            response = self._post_image("/api/search/items/")
            self.events.append((time.monotonic(), "search", response is not None and response.status_code == 200))

    def failures(self, since: float, until: float) -> dict:
        window = [e for e in self.events if since <= e[0] <= until]
        return {kind: (sum(1 for e in window if e[1] == kind and not e[2]), sum(1 for e in window if e[1] == kind))
                for kind in ("search", "upload")}


def healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def wait_for(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"FAILED: {what} not within {timeout:.0f} s")


def status_of(url: str, token: str, item_id: int) -> str | None:
    try:
        response = requests.get(f"{url}/api/wardrobe/items/{item_id}/", timeout=10,
                                headers={"Authorization": f"Token {token}"})
        return response.json().get("status") if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def listener(port: int) -> psutil.Process:
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            return psutil.Process(connection.pid)
    raise SystemExit(f"nothing listens on port {port}: is the platform running?")


class Platform:
    def __init__(self, url: str):
        web = listener(urlparse(url).port)
        # the launcher is the web's parent (gunicorn: the master's parent)
        launcher = web.parent()
        while launcher is not None and "fashionsite.launcher" not in " ".join(launcher.cmdline()):
            launcher = launcher.parent()
        if launcher is None:
            raise SystemExit("the web server was not started by fashionsite.launcher (make run)")
        self.launcher = launcher

    def service(self, match: str) -> psutil.Process | None:
        for child in self.launcher.children():
            try:
                if match in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                pass
        return None

    def kill(self, match: str) -> int:
        process = self.service(match)
        if process is None:
            raise SystemExit(f"no service matching {match!r} under the launcher")
        os.killpg(process.pid, signal.SIGKILL)  # the launcher starts each service in its own process group
        return process.pid

    def restarted(self, match: str, old_pid: int) -> bool:
        process = self.service(match)
        return process is not None and process.pid != old_pid and process.is_running()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("FASHIONSITE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="folder of JPEGs to upload and search with")
    parser.add_argument("--settle", type=float, default=20, help="seconds of load between faults")
    args = parser.parse_args()
    url = args.url.rstrip("/")
    if urlparse(url).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("the drill runs against a platform on this machine only (it kills its processes)")
    if not healthy(url):
        raise SystemExit(f"{url}/healthz does not answer 200: start the platform first (make run)")
    platform = Platform(url)
    images = sorted(args.sample.glob("*_reco.jpg"))[:200]

    username, password = f"drill-{int(time.time())}", "drill-password-1234"
    requests.post(f"{url}/api/auth/register/", json={"username": username, "password": password}, timeout=30)
    token = requests.post(f"{url}/api/auth/token/", json={"username": username, "password": password},
                          timeout=30).json()["token"]
    load = Load(url, token, images)
    load.start()
    print(f"drill against {url} (launcher pid {platform.launcher.pid}); load: an upload every 2 s, a search "
          f"every 0.5 s", flush=True)
    time.sleep(args.settle)
    results = []

    def fault(name, match, recovered, timeout=240):
        started = time.monotonic()
        pid = platform.kill(match)
        print(f"killed {name} (pid {pid}, SIGKILL to its process group)", flush=True)
        seconds, detail = recovered(pid, started)
        failures = load.failures(started, time.monotonic())
        results.append((name, seconds, detail, failures))
        print(f"  recovered in {seconds:.1f} s ({detail}); failed during it: searches {failures['search'][0]}/"
              f"{failures['search'][1]}, uploads {failures['upload'][0]}/{failures['upload'][1]}", flush=True)
        wait_for(lambda: healthy(url), 240, "the platform healthy again")
        time.sleep(args.settle)

    def redis_recovered(pid, started):
        during = None
        deadline = time.monotonic() + 10
        while during is None and time.monotonic() < deadline:  # an upload while Redis is (or was just) down
            during = load.upload()
        wait_for(lambda: healthy(url), 240, "/healthz 200 after Redis was killed")
        health = time.monotonic() - started
        if during is not None:
            wait_for(lambda: status_of(url, token, during) == "ready", 240, "the upload made without Redis ready")
        return time.monotonic() - started, f"/healthz 200 after {health:.1f} s, then the upload made meanwhile ready"

    def worker_recovered(match):
        def recovered(pid, started):
            wait_for(lambda: platform.restarted(match, pid), 120, f"a new {match} worker")
            restarted = time.monotonic() - started
            upload = load.upload()
            if upload is not None:
                wait_for(lambda: status_of(url, token, upload) == "ready", 300, "an upload after the kill ready")
            return time.monotonic() - started, f"restarted after {restarted:.1f} s, then an upload made then ready"
        return recovered

    def web_recovered(pid, started):
        wait_for(lambda: healthy(url), 240, "/healthz 200 after the web was killed")
        return time.monotonic() - started, "/healthz 200 again"

    if platform.service("redis-server") is not None:
        fault("redis", "redis-server", redis_recovered)
    else:
        print("Redis was not started by the launcher (it reused one): not killing it")
    fault("interactive worker", "--queues interactive", worker_recovered("--queues interactive"))
    fault("bulk worker (with the beat)", "--queues celery", worker_recovered("--queues celery"))
    fault("web", "manage.py runserver" if platform.service("manage.py runserver") else "gunicorn", web_recovered)
    load.stop()

    print(f"waiting for every upload ({len(load.uploads)}) to end ready ...", flush=True)
    started = time.monotonic()
    statuses = {}
    while time.monotonic() - started < 600:
        statuses = {item: status_of(url, token, item) for item in load.uploads}
        if all(s in ("ready", "failed") for s in statuses.values()):
            break
        time.sleep(2)
    counts = {s: sum(1 for v in statuses.values() if v == s) for s in set(statuses.values())}
    print("\n| fault | recovery (s) | until | searches failed during it | uploads failed during it |")
    print("| --- | --- | --- | --- | --- |")
    for name, seconds, detail, failures in results:
        print(f"| {name} | {seconds:.1f} | {detail} | {failures['search'][0]} of {failures['search'][1]} | "
              f"{failures['upload'][0]} of {failures['upload'][1]} |")
    total_searches = sum(1 for e in load.events if e[1] == "search")
    failed_searches = sum(1 for e in load.events if e[1] == "search" and not e[2])
    print(f"\nsearches: {total_searches}, failed {failed_searches} (all of them while the web was down or "
          f"restarting, if any)")
    print(f"uploads accepted: {len(load.uploads)}; final status: {counts} "
          f"({time.monotonic() - started:.0f} s after the last fault's load stopped)")
    every_ready = counts.get("ready", 0) == len(load.uploads)
    print("every upload ended ready" if every_ready else "NOT every upload ended ready")
    sys.exit(0 if every_ready else 1)


if __name__ == "__main__":
    main()
