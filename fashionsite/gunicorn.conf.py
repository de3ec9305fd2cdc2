"""gunicorn's configuration for the web (`make run` and the Procfile's `web`): gunicorn --config this file.

Sized for the 2 cores of the reference machine: 1 worker process (FASHIONSITE_WEB_WORKERS) of 4 threads
(FASHIONSITE_WEB_THREADS). The threads fill both cores: TensorFlow's forward pass and Postgres run outside the
GIL, so while one request's Python holds it, another's model or query runs on the other core. One process
rather than two (measured under bench/load.py, docs/RESULTS.md "Issue 10: load, session 10"): the CPU a request
costs is the same, but a single process serves its requests from one first-come queue, whereas two processes
each keep the keep-alive connections they accepted and serve them in parallel, which spreads the latencies out
(snapshot -> items p95 / p50: 2 x 4 and 2 x 2 1.54-1.56, 1 x 2 to 1 x 4 1.27-1.42; p95 1.42 s for 2 x 4 at
1.76 cores against 1.22 s for 1 x 4 at 1.56 cores, same machine, same hour).
It also holds one copy of the model instead of two. With several cores, raise the workers. The app is loaded in each worker after the fork (never --preload:
TensorFlow is not fork-safe), and each worker then loads and warms the active model in the background
(post_worker_init), so the first search does not pay for it.
"""
import os
import threading

# numpy's OpenBLAS runs one thread per request thread, not a pool of its own (read when a worker first imports
# numpy, after the fork; set here, in the master, so that every worker inherits it). Its pool spins between the
# small matrix products of a search's scoring, and with 4 request threads and TensorFlow's threads on 2 cores
# that pool's one thread burned 0.28 cores under bench/load.py: 75 -> 58 ms of web CPU a request
# (docs/RESULTS.md, "Issue 10: load, session 11"). The products are a few hundred rows: one thread is plenty.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

wsgi_app = "fashionsite.wsgi:application"
bind = f"{os.environ.get('FASHIONSITE_BIND', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("FASHIONSITE_WEB_WORKERS", "1"))
threads = int(os.environ.get("FASHIONSITE_WEB_THREADS", "4"))
preload_app = False

# A search waits for the model: well under a second normally, longer while the worker still loads it.
timeout = int(os.environ.get("FASHIONSITE_WEB_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
# Recycle a worker now and then (a slow leak in a library cannot grow forever); jitter so that the workers are
# not all restarting (and reloading the model) at once. Off with a single worker: while it restarts nobody would
# answer and the first searches would wait for the model to load again.
max_requests = int(os.environ.get("FASHIONSITE_WEB_MAX_REQUESTS", "5000" if workers > 1 else "0"))
max_requests_jitter = max_requests // 10

# Behind a TLS proxy on another machine, list its address, so that gunicorn believes its X-Forwarded-Proto.
forwarded_allow_ips = os.environ.get("FASHIONSITE_FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = os.environ.get("FASHIONSITE_ACCESS_LOG", "-") or None  # "" for none
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# gunicorn's control socket defaults to one path per user: two platforms on one machine would share it.
control_socket_disable = True


def post_worker_init(worker):
    """In each worker, after the fork and after the app is loaded: load and warm the active model."""
    if os.environ.get("FASHIONSITE_WARM_MODEL", "1") != "1":
        return
    from recommender.apps import warm_up_active_model

    threading.Thread(target=warm_up_active_model, name="warm-model", daemon=True).start()
