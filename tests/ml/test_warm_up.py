"""Embedder.warm_up: both compiled forward passes are traced at load, so the first real batch (a worker's) or
query (a web process's) runs the graph already built, at any batch size, with the descriptors unchanged.
The platform's loader (recommender.embedders.get_embedder) warms every model it loads: tests/test_embedders.py."""
import numpy as np
from django.conf import settings

from ml.embedding import load_embedder
from ml.images import load_input_pixels, preprocess_array


def _tracings(embedder) -> tuple[int, int]:
    return (embedder._embed_pixels.experimental_get_tracing_count(),
            embedder._embed.experimental_get_tracing_count())


def test_warm_up_traces_both_passes_once_and_real_batches_reuse_them(sample_dir):
    embedder = load_embedder("untrained-lite0", settings.MODEL_CACHE_DIR)
    assert _tracings(embedder) == (0, 0), "loading alone traces nothing"

    embedder.warm_up()
    assert _tracings(embedder) == (1, 1)

    paths = sorted(sample_dir.glob("*_part.jpg"))[:9]
    pixels = np.stack([load_input_pixels(path, embedder.input_size) for path in paths])
    from_pixels = embedder.embed_batch(pixels)  # a step of model_batch_size (8) and one of 1
    from_floats = embedder.embed_batch(preprocess_array(pixels[:3]))
    assert _tracings(embedder) == (1, 1), "no batch size traces the graphs again"

    cold = load_embedder("untrained-lite0", settings.MODEL_CACHE_DIR)  # never warmed: the same descriptors
    np.testing.assert_array_equal(from_pixels, cold.embed_batch(pixels))
    np.testing.assert_array_equal(from_floats, cold.embed_batch(preprocess_array(pixels[:3])))

