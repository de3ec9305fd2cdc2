"""The embedding models of this process, loaded (and warmed up) once per process and kept (never once per task or
request).

TensorFlow is not fork-safe, so nothing here runs at import time: the worker loads the active model in
`worker_process_init` (after the fork), the web process on first use.

Only the most recently used few are kept: during a re-embedding a process needs the active version (queries)
and the new one (the re-embedding tasks); after each `update_db` the oldest becomes garbage, and a long-running
worker would otherwise hold every version it ever loaded (each a backbone's weights plus its TensorFlow
graph).
"""
import threading
from collections import OrderedDict

from django.conf import settings

from ml.embedding import Embedder, load_embedder
from ml.model_card import ModelCard

KEEP_EMBEDDERS = 2

_embedders: "OrderedDict[str, Embedder]" = OrderedDict()
_lock = threading.Lock()


def get_embedder(version) -> Embedder:
    with _lock:
        if version.spec in _embedders:
            _embedders.move_to_end(version.spec)
        else:
            embedder = load_embedder(version.spec, settings.MODEL_CACHE_DIR)
            embedder.query_batch_size = settings.QUERY_BATCH_SIZE
            # traced now, with the load, not in the first batch or search (a worker's pool processes both load
            # at start: a first task that traced would run beside the other process's steady work)
            embedder.warm_up()
            _embedders[version.spec] = embedder
            while len(_embedders) > KEEP_EMBEDDERS:
                _embedders.popitem(last=False)  # callers still holding it keep it alive until they finish
        return _embedders[version.spec]


def model_card(version) -> ModelCard | None:
    """The model card of a version's model (what its queries are scored with), None for an untrained backbone."""
    return getattr(get_embedder(version), "card", None)
