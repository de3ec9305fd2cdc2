"""The embedding models of this process, loaded once per process and kept (never once per task or request).

TensorFlow is not fork-safe, so nothing here runs at import time: the worker loads the active model in
`worker_process_init` (after the fork), the web process on first use.
"""
import threading

from django.conf import settings

from ml.embedding import Embedder, load_embedder

_embedders: dict[str, Embedder] = {}
_lock = threading.Lock()


def get_embedder(version) -> Embedder:
    with _lock:
        if version.spec not in _embedders:
            _embedders[version.spec] = load_embedder(version.spec, settings.MODEL_CACHE_DIR)
        return _embedders[version.spec]
