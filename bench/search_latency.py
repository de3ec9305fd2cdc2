"""Search latency over HTTP against a running server: snapshot -> items and item -> looks.

    .venv/bin/python bench/search_latency.py [--url http://127.0.0.1:8000] [-n 100] [--k 6] [--via api|page]

POSTs N real street snapshots from the sample data (../shared/data/musinsa/dev) to the snapshot -> items
search and N real item photos to the item -> looks search, one request at a time (latency, not throughput),
after a few warm-up requests, and prints p50 / p95 / mean / max per endpoint against the targets
(p50 <= 100 ms, p95 <= 200 ms). Each response must carry k results.

--via api (default) uses the REST API (/api/search/items/, /api/search/looks/), which throttles anonymous
clients (FASHIONSITE_SEARCH_ANON_RATE, 60/minute by default): start the server measured with a higher rate,
e.g. FASHIONSITE_SEARCH_ANON_RATE=100000/minute FASHIONSITE_SEARCH_RATE=100000/minute, or pass --token.
--via page uses the web page's form endpoints (/search/items/, /search/looks/) with their JSON variant.

--sign-in signs the client in through the database, as bench/load.py does (run it with the server's
environment: the same FASHIONSITE_DATA_DIR or DATABASE_URL), so the API's per-user search rate applies.
Beside the figures: the active model's single-image forward pass (p50 over 20 passes, in this process, after a
warm-up) measured in the same run, and `uptime` before and after (the machine may be shared).

Measure only a server nobody else is using, e.g. one of your own:
    FASHIONSITE_DATA_DIR=/tmp/bench-site PORT=8123 make run     # first start imports the catalogue (~3 min)
"""
import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE_DIR = ROOT.parent / "shared" / "data" / "musinsa" / "dev"
TARGET_P50_MS, TARGET_P95_MS = 100.0, 200.0  # issue 9 point 3 (sequential, at 100k items)
ENDPOINTS = {
    "api": {"items": "/api/search/items/", "looks": "/api/search/looks/"},
    "page": {"items": "/search/items/?format=json", "looks": "/search/looks/?format=json"},
}


def sample_files(kind: str, n: int) -> list[Path]:
    """n files of one kind, spread over the whole sample (every look, not only the first ones)."""
    suffix = "_part.jpg" if kind == "snapshot" else "_reco.jpg"
    files = sorted(p for p in SAMPLE_DIR.iterdir() if p.name.endswith(suffix))
    if not files:
        raise SystemExit(f"no {kind} images in {SAMPLE_DIR}")
    step = max(1, len(files) // n)
    chosen = files[::step][:n]
    while len(chosen) < n:  # fewer files than requests: go round again
        chosen += files[: n - len(chosen)]
    return chosen


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Client:
    def __init__(self, base_url: str, via: str, token: str | None):
        self.base_url = base_url.rstrip("/")
        self.via = via
        self.session = requests.Session()
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Token {token}"
        if via == "page":  # the form endpoints are CSRF-protected: take the cookie and token from the page
            response = self.session.get(self.base_url + "/", timeout=30)
            response.raise_for_status()
            self.headers["X-CSRFToken"] = self.session.cookies.get("csrftoken", "")
            self.headers["Referer"] = self.base_url + "/"

    def search(self, endpoint: str, path: Path, k: int) -> tuple[float, requests.Response]:
        data = path.read_bytes()
        url = self.base_url + ENDPOINTS[self.via][endpoint]
        start = time.perf_counter()
        response = self.session.post(
            url, files={"image": (path.name, data, "image/jpeg")}, data={"k": str(k)}, headers=self.headers, timeout=60
        )
        return (time.perf_counter() - start) * 1000.0, response


def run_endpoint(client: Client, endpoint: str, files: list[Path], k: int, warmup: int) -> dict:
    for path in files[:warmup]:
        client.search(endpoint, path, k)
    latencies, failures = [], []
    for path in files:
        ms, response = client.search(endpoint, path, k)
        if response.status_code != 200:
            failures.append(f"{path.name}: HTTP {response.status_code} {response.text[:200]}")
            if response.status_code == 429:
                failures.append("throttled: raise FASHIONSITE_SEARCH_ANON_RATE on the server, or use --via page")
                break
            continue
        results = response.json().get("results", [])
        if len(results) != k:
            failures.append(f"{path.name}: {len(results)} results, expected {k}")
        latencies.append(ms)
    return {"latencies": latencies, "failures": failures}


def report(endpoint: str, label: str, outcome: dict) -> bool:
    latencies = outcome["latencies"]
    if not latencies:
        print(f"{label}: no successful request")
        for failure in outcome["failures"][:5]:
            print(f"  {failure}")
        return False
    p50, p95 = percentile(latencies, 0.50), percentile(latencies, 0.95)
    ok = p50 <= TARGET_P50_MS and p95 <= TARGET_P95_MS and not outcome["failures"]
    print(
        f"{label:<26} n={len(latencies):<4} p50={p50:7.1f} ms  p95={p95:7.1f} ms  mean={statistics.fmean(latencies):7.1f} ms"
        f"  max={max(latencies):7.1f} ms  {'OK' if ok else 'OVER TARGET' if not outcome['failures'] else 'FAILURES'}"
    )
    for failure in outcome["failures"][:5]:
        print(f"  {failure}")
    return ok


def single_forward_pass_ms(passes: int = 20) -> tuple[str, float]:
    """p50 milliseconds of the active model's forward pass of one image, in this process (after a warm-up)."""
    import numpy as np

    from recommender.embedders import get_embedder
    from recommender.services.versions import active_version

    version = active_version()
    embedder = get_embedder(version)
    image = np.random.default_rng(0).uniform(-1, 1, (1, embedder.input_size, embedder.input_size, 3))
    image = image.astype(np.float32)
    for _ in range(3):
        embedder.embed_batch(image)
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        embedder.embed_batch(image)
        times.append((time.perf_counter() - start) * 1000)
    return version.name, statistics.median(times)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running server (default %(default)s)")
    parser.add_argument("-n", type=int, default=100, help="requests per endpoint (default %(default)s)")
    parser.add_argument("--k", type=int, default=6, help="results per search (default %(default)s)")
    parser.add_argument("--via", choices=sorted(ENDPOINTS), default="api", help="REST API or page endpoints")
    parser.add_argument("--token", help="an API token (authenticated clients get the higher 'search' rate)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured requests first (default %(default)s)")
    parser.add_argument("--only", choices=["items", "looks"], help="measure one endpoint only")
    parser.add_argument("--sign-in", action="store_true",
                        help="sign in through the database (the server's environment) and use the user's token")
    parser.add_argument("--no-forward-pass", action="store_true", help="skip the model's own forward-pass figure")
    args = parser.parse_args()

    try:
        health = requests.get(args.url.rstrip("/") + "/healthz", timeout=30).json()
    except requests.RequestException as error:
        print(f"no server at {args.url} ({error}); start one, e.g. PORT=8123 make run", file=sys.stderr)
        return 2
    catalogue = health.get("catalogue", {})
    print(
        f"server {args.url}: model {health.get('model', {}).get('active')}, catalogue {catalogue}; "
        f"{args.n} requests per endpoint via {args.via}, k={args.k}, sequential"
    )
    if args.sign_in or not args.no_forward_pass:
        from bench.load import setup_django, signed_in_clients

        setup_django()
        if args.sign_in:
            args.token = signed_in_clients(1)[0]["token"]
    if not args.no_forward_pass:
        version, forward_ms = single_forward_pass_ms()
        print(f"model forward pass of one image (this process, p50 of 20, {version}): {forward_ms:.1f} ms")
    print(f"uptime before: {uptime()}")
    client = Client(args.url, args.via, args.token)
    plan = [
        ("items", "snapshot -> items", sample_files("snapshot", args.n)),
        ("looks", "item -> looks", sample_files("item", args.n)),
    ]
    all_ok = True
    for endpoint, label, files in plan:
        if args.only and endpoint != args.only:
            continue
        outcome = run_endpoint(client, endpoint, files, args.k, args.warmup)
        all_ok &= report(endpoint, f"{label} ({ENDPOINTS[args.via][endpoint].split('?')[0]})", outcome)
    print(f"uptime after:  {uptime()}")
    print(f"targets: p50 <= {TARGET_P50_MS:.0f} ms, p95 <= {TARGET_P95_MS:.0f} ms")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
