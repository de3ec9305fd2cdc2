"""gunicorn's configuration for the web (`make run` and the Procfile's `web`): gunicorn --config this file.

Sized by the cores: one worker process per core (FASHIONSITE_WEB_WORKERS), each of 2 threads
(FASHIONSITE_WEB_THREADS), each running TensorFlow on its share of the cores (one thread each on 2 cores:
ml.cores.intra_op_threads_for). One process on both cores lost time to TensorFlow's two threads of each
operation waiting for each other; two processes of one thread each run the model in ~25 % less CPU. A worker
takes a connection only when one of its threads is free (worker_connections = threads) and closes it after the
answer (keepalive 0): the connections waiting for a thread then wait in the one listening socket that all
workers take from, first come, first served, so no worker's queue grows while another's threads are idle (with
keep-alive connections each worker kept the clients it had accepted, and the p95 spread out). Under
bench/load.py on 2 cores (docs/RESULTS.md, "Session 13"): 32.5-35.1 requests/s and snapshot ->
items p95 791-854 ms, against 24.6-28.3 requests/s and 973-1,076 ms for the former 1 process x 4 threads with
keep-alive. Behind a proxy (README, HTTPS) the proxy keeps the clients' connections alive; it opens one to
gunicorn per request, as nginx does by default. Each worker holds its own copy of the model (~0.7 GB).
The app is loaded in each worker after the fork (never --preload:
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

from ml.cores import available_cores, intra_op_threads_for  # noqa: E402 - no numpy: after the line above anyway

wsgi_app = "fashionsite.wsgi:application"
bind = f"{os.environ.get('FASHIONSITE_BIND', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("FASHIONSITE_WEB_WORKERS") or available_cores())
threads = int(os.environ.get("FASHIONSITE_WEB_THREADS", "2"))
preload_app = False

# A search waits for the model: well under a second normally, longer while the worker still loads it.
timeout = int(os.environ.get("FASHIONSITE_WEB_TIMEOUT", "120"))
graceful_timeout = 30
# a connection per request, taken only by a worker with a free thread (see above)
keepalive = int(os.environ.get("FASHIONSITE_WEB_KEEPALIVE", "0"))
worker_connections = int(os.environ.get("FASHIONSITE_WEB_CONNECTIONS") or threads)
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
    """In each worker, after the fork and after the app is loaded: size TensorFlow's intra-op pool (the cores
    shared among the workers, or FASHIONSITE_WEB_TF_INTRA_OP_THREADS), then load and warm the active model."""
    from ml.embedding import set_tf_threads

    set_tf_threads(int(os.environ.get("FASHIONSITE_WEB_TF_INTRA_OP_THREADS") or intra_op_threads_for(workers)), 0)
    if os.environ.get("FASHIONSITE_WARM_MODEL", "1") != "1":
        return
    from recommender.apps import warm_up_active_model

    threading.Thread(target=warm_up_active_model, name="warm-model", daemon=True).start()
