"""Load: N concurrent signed-in clients for a fixed time against a running platform, on this machine only.

    .venv/bin/python bench/load.py [--url http://127.0.0.1:8000] [--clients 20] [--duration 60]

Run it with the server's environment (the same FASHIONSITE_DATA_DIR, or DATABASE_URL): it signs its clients
in through the database (users `load-client-N`, their API token and a session cookie, made once), then each
client loops, without pause, over a mix of requests drawn at random:

    search items 40 %   POST /api/search/items/  a street snapshot from the sample catalogue
    search looks 20 %   POST /api/search/looks/  an item photo
    looks page   15 %   GET /looks/?page=N
    wardrobe     15 %   GET /wardrobe/
    suggestions  10 %   GET /suggestions/

and prints, per kind and overall: requests, errors (any status but 200, or no answer), throughput, p50 and p95.
Beside them, the model's batched forward-pass rate (images/s, batches of 32, the active version), measured by
this script in the same run just before the load, and `uptime` before and after (the machine may be shared).

It also prints what a request cost the server in CPU: the CPU seconds that the web server's processes (the
process listening on the URL's port and its children, e.g. gunicorn's master and workers) and the embedded
Postgres (its postmaster and backends) used during the load, divided by the requests answered. On a shared
machine latency follows the share of the cores the server got; the CPU per request does not, so it is the
figure to compare between runs when the machine's load changed.
Bounded: loopback URLs only, --duration at most 600 s, each request times out after 60 s.
"""
import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlparse

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE_DIR = ROOT.parent / "shared" / "data" / "musinsa" / "dev"
MIX = [("search items", 40), ("search looks", 20), ("looks page", 15), ("wardrobe", 15), ("suggestions", 10)]
TARGET_ITEMS_P95_MS = 1000.0
PASSWORD = "load-client-password-1"


def percentile(values, q):
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def setup_django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fashionsite.settings")
    import django

    django.setup()


def signed_in_clients(n: int) -> list[dict]:
    """n users with a token and a session (made in the database, as the login page would)."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from rest_framework.authtoken.models import Token

    clients = []
    for index in range(n):
        user, created = get_user_model().objects.get_or_create(username=f"load-client-{index}")
        if created:
            user.set_password(PASSWORD)
            user.save()
        token, _ = Token.objects.get_or_create(user=user)
        browser = Client()
        browser.force_login(user, backend="accounts.backends.ThrottledModelBackend")
        clients.append({"token": token.key, "session": browser.cookies["sessionid"].value})
    return clients


def forward_pass_rate(seconds: float = 10.0, batch: int = 32) -> tuple[str, float]:
    """Images/s of the active model's batched forward pass in this process (after one warm-up batch)."""
    import numpy as np

    from recommender.embedders import get_embedder
    from recommender.services.versions import active_version

    version = active_version()
    embedder = get_embedder(version)
    inputs = np.random.default_rng(0).uniform(-1, 1, (batch, embedder.input_size, embedder.input_size, 3))
    inputs = inputs.astype(np.float32)
    embedder.embed_batch(inputs)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        embedder.embed_batch(inputs)
        done += batch
    return version.name, done / (time.perf_counter() - start)


def sample_files(suffix: str) -> list[Path]:
    files = sorted(p for p in SAMPLE_DIR.iterdir() if p.name.endswith(suffix))
    if not files:
        raise SystemExit(f"no *{suffix} images in {SAMPLE_DIR}")
    return files


def listening_process(port: int):
    """The process that owns the listening socket on `port` (for a pre-fork server, the master), or None.

    psutil.net_connections names one process per socket, and a pre-fork server's master and workers all hold
    the same one, so it may name a worker: climb to the topmost ancestor that still listens on the port (else
    only one worker's CPU would be counted, as it was before this was fixed)."""
    import psutil

    def listens(process) -> bool:
        try:
            return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                       for c in process.net_connections(kind="tcp"))
        except psutil.Error:
            return False

    pids = {c.pid for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid}
    for pid in pids:
        try:
            process = psutil.Process(pid)
        except psutil.Error:
            continue
        while (parent := process.parent()) is not None and listens(parent):
            process = parent
        return process
    return None


def postgres_process():
    """The embedded Postgres server's postmaster (FASHIONSITE_DATA_DIR), or None (DATABASE_URL, or not found)."""
    import psutil

    from fashionsite.paths import data_dir

    if os.environ.get("DATABASE_URL"):
        return None
    try:
        return psutil.Process(int((data_dir() / "postgres" / "postmaster.pid").read_text().split()[0]))
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def tree_cpu_seconds(process) -> float:
    """User + system CPU seconds of a process and its live children (and the children it has reaped)."""
    import psutil

    if process is None:
        return 0.0
    total = 0.0
    try:
        members = [process] + process.children(recursive=True)
    except psutil.Error:
        return 0.0
    for member in members:
        try:
            times = member.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_client(base: str, identity: dict, deadline: float, seed: int, files: dict, results: list, lock):
    rng = random.Random(seed)
    session = requests.Session()
    session.cookies.set("sessionid", identity["session"])
    token = {"Authorization": f"Token {identity['token']}", "Accept": "application/json"}
    kinds, weights = zip(*MIX)
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        start = time.perf_counter()
        try:
            if kind in ("search items", "search looks"):
                path = rng.choice(files["snapshot" if kind == "search items" else "item"])
                endpoint = "/api/search/items/" if kind == "search items" else "/api/search/looks/"
                with path.open("rb") as handle:
                    response = session.post(base + endpoint, files={"image": (path.name, handle, "image/jpeg")},
                                            data={"k": 6}, headers=token, timeout=60)
                ok = response.status_code == 200 and len(response.json()["results"]) > 0
            else:
                url = {"looks page": f"/looks/?page={rng.randint(1, 10)}", "wardrobe": "/wardrobe/",
                       "suggestions": "/suggestions/"}[kind]
                response = session.get(base + url, timeout=60, allow_redirects=False)
                ok = response.status_code == 200
            status = response.status_code
        except requests.RequestException as error:
            ok, status = False, type(error).__name__
        elapsed = (time.perf_counter() - start) * 1000
        with lock:
            results.append((kind, elapsed, ok, status, time.monotonic()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--forward-seconds", type=float, default=10.0)
    args = parser.parse_args()
    if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("bench/load.py only loads a server on this machine (a loopback URL)")
    if not 0 < args.duration <= 600:
        raise SystemExit("--duration must be between 0 and 600 seconds")
    base = args.url.rstrip("/")
    try:
        health = requests.get(base + "/healthz", timeout=30).json()
    except (requests.RequestException, ValueError) as error:
        raise SystemExit(f"no platform at {base} ({error}); start one, e.g. PORT=8300 make run")

    setup_django()
    clients = signed_in_clients(args.clients)
    files = {"snapshot": sample_files("_part.jpg"), "item": sample_files("_reco.jpg")}
    version, rate = forward_pass_rate(args.forward_seconds)
    print(f"server {base}: model {health.get('model', {}).get('active')}; {args.clients} clients for "
          f"{args.duration:.0f} s")
    print(f"model forward pass (this process, batches of 32, {version}): {rate:.1f} images/s")
    before = uptime()
    print(f"uptime before: {before}")

    server, postgres = listening_process(urlparse(args.url).port or 80), postgres_process()
    cpu_before = tree_cpu_seconds(server), tree_cpu_seconds(postgres)
    own_cpu_before = time.process_time()  # the load generator shares the cores: its own cost is printed too
    results, lock = [], threading.Lock()
    deadline = time.monotonic() + args.duration
    started = time.monotonic()
    threads = [
        threading.Thread(target=run_client, args=(base, identity, deadline, index, files, results, lock))
        for index, identity in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    cpu_web, cpu_db = (tree_cpu_seconds(p) - before for p, before in zip((server, postgres), cpu_before))
    cpu_client = time.process_time() - own_cpu_before
    print(f"uptime after:  {uptime()}")

    by_kind = defaultdict(list)
    for row in results:
        by_kind[row[0]].append(row)
    print(f"\n{'kind':<14}{'requests':>9}{'errors':>8}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}")
    for kind, _ in MIX + [("all", 0)]:
        rows = results if kind == "all" else by_kind.get(kind, [])
        if not rows:
            continue
        times = [row[1] for row in rows]
        errors = sum(1 for row in rows if not row[2])
        print(f"{kind:<14}{len(rows):>9}{errors:>8}{len(rows) / wall:>8.1f}{percentile(times, 0.5):>9.0f}"
              f"{percentile(times, 0.95):>9.0f}{statistics.fmean(times):>9.0f}")
    failures = [row for row in results if not row[2]]
    if failures:
        statuses = defaultdict(int)
        for row in failures:
            statuses[(row[0], row[3])] += 1
        print("errors:", ", ".join(f"{kind} -> {status}: {n}" for (kind, status), n in sorted(statuses.items())))
    answered = max(1, len(results))
    web_name = f"{server.name()} pid {server.pid}" if server is not None else "not found"
    print(f"\nserver CPU per request (all kinds): web {1000 * cpu_web / answered:.1f} ms ({web_name} and children), "
          f"Postgres {1000 * cpu_db / answered:.1f} ms ({'embedded' if postgres is not None else 'not measured'}); "
          f"{cpu_web + cpu_db:.1f} CPU s in {wall:.0f} s of load = {(cpu_web + cpu_db) / wall:.2f} cores")
    print(f"load generator (this process): {1000 * cpu_client / answered:.1f} ms CPU per request = "
          f"{cpu_client / wall:.2f} cores")
    items = [row[1] for row in by_kind.get("search items", [])]
    p95 = percentile(items, 0.95) if items else float("inf")
    verdict = "meets" if p95 <= TARGET_ITEMS_P95_MS and not failures else "misses"
    print(f"\nsnapshot -> items p95 {p95:.0f} ms under load: {verdict} the target (<= {TARGET_ITEMS_P95_MS:.0f} ms,"
          f" 0 errors)")
    return 0 if verdict == "meets" else 1


if __name__ == "__main__":
    sys.exit(main())
