"""The per-process embedder cache: loaded (and warmed up) once per version, only the most recent few kept.

The loader is replaced by a counter: what is tested is the cache, not the model (the model is tested with the
real weights in test_embedding_pipeline.py)."""
from types import SimpleNamespace

from recommender import embedders


def test_embedders_load_once_and_keep_only_the_recent_versions(monkeypatch):
    loads, warmed = [], []

    def fake_load(spec, cache_dir):
        loads.append(spec)
        return SimpleNamespace(warm_up=lambda: warmed.append(spec))

    monkeypatch.setattr(embedders, "load_embedder", fake_load)
    monkeypatch.setattr(embedders, "_embedders", embedders.OrderedDict())
    v1, v2, v3 = (SimpleNamespace(spec=f"model:{i}") for i in (1, 2, 3))

    first = embedders.get_embedder(v1)
    assert embedders.get_embedder(v1) is first           # no second load
    embedders.get_embedder(v2)
    assert embedders.get_embedder(v1) is first           # v1 now the most recently used
    embedders.get_embedder(v3)                          # evicts v2, the least recently used
    assert list(embedders._embedders) == ["model:1", "model:3"]
    embedders.get_embedder(v2)
    assert loads == ["model:1", "model:2", "model:3", "model:2"]
    assert warmed == loads, "each model is warmed up as it loads (its graphs traced then, not in the first task)"
    assert len(embedders._embedders) == embedders.KEEP_EMBEDDERS
