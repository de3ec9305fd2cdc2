"""ml.batching.MicroBatcher: concurrent single-image queries share forward passes and each caller gets its own
row back, as the real model computes it alone.

The real model on real images for the results; a plain function where what is tested is the scheduling
(ordering, errors, the batch limit), with a gate that holds the first pass until the others have queued, so
that the batching is deterministic rather than left to thread timing."""
import threading
import time

import numpy as np
import pytest
from django.conf import settings

from ml.batching import MicroBatcher
from ml.embedding import load_embedder
from ml.images import load_input_array


def _queued(batcher) -> int:
    with batcher._changed:
        return len(batcher._queue)


def _call_concurrently(batcher, inputs, hold_first_until_queued: int | None = None):
    """Calls batcher(x) for every input from its own thread; returns the outputs (or errors) in input order."""
    results = [None] * len(inputs)
    threads = []

    def call(index):
        try:
            results[index] = batcher(inputs[index])
        except Exception as error:  # noqa: BLE001 - returned to the test
            results[index] = error

    threads.append(threading.Thread(target=call, args=(0,)))
    threads[0].start()
    if hold_first_until_queued is not None:  # the first pass is running (held); queue the others behind it
        deadline = time.monotonic() + 10
        while not batcher._running and time.monotonic() < deadline:
            time.sleep(0.001)
    for index in range(1, len(inputs)):
        threads.append(threading.Thread(target=call, args=(index,)))
        threads[-1].start()
    for thread in threads:
        thread.join(timeout=60)
    return results


class Gate:
    """A batch function that holds its first call until `n` inputs are queued behind it."""

    def __init__(self, fn, n):
        self.fn, self.n, self.batcher, self.sizes = fn, n, None, []

    def __call__(self, batch):
        if not self.sizes:
            deadline = time.monotonic() + 10
            while _queued(self.batcher) < self.n and time.monotonic() < deadline:
                time.sleep(0.001)
        self.sizes.append(len(batch))
        return self.fn(batch)


def gated(fn, n, **options):
    gate = Gate(fn, n)
    gate.batcher = MicroBatcher(gate, **options)
    return gate.batcher, gate


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("untrained-lite0", settings.MODEL_CACHE_DIR)


def test_concurrent_queries_share_passes_and_get_their_own_descriptor(embedder, sample_dir):
    paths = sorted(sample_dir.glob("*_part.jpg"))[:4] + sorted(sample_dir.glob("*_reco.jpg"))[:5]
    inputs = [load_input_array(path, embedder.input_size) for path in paths]
    alone = np.stack([embedder.embed_batch(x[None])[0] for x in inputs])  # each image in a pass of its own

    batcher, gate = gated(embedder.embed_batch, n=len(inputs) - 1, max_batch=8)
    outputs = _call_concurrently(batcher, inputs, hold_first_until_queued=len(inputs) - 1)

    assert gate.sizes == [1, 8], "the 8 queries queued behind the first pass go together in the next"
    assert batcher.stats == {"calls": 2, "inputs": 9}
    np.testing.assert_allclose(np.stack(outputs), alone, atol=1e-5)
    assert np.all(np.argmax(np.stack(outputs) @ alone.T, axis=1) == np.arange(len(inputs))), "no rows swapped"


def test_embed_one_is_the_single_image_descriptor(embedder, sample_dir):
    x = load_input_array(sample_dir / "0_0_part.jpg", embedder.input_size)
    np.testing.assert_allclose(embedder.embed_one(x), embedder.embed_batch(x[None])[0], atol=1e-6)
    assert embedder.embed_one(x).shape == (embedder.dim,)


def test_a_lone_query_runs_at_once():
    calls = []
    batcher = MicroBatcher(lambda batch: calls.append(len(batch)) or batch * 2, max_batch=8, max_wait_s=0.0)
    start = time.perf_counter()
    assert batcher(np.array([1.0]))[0] == 2.0
    assert time.perf_counter() - start < 0.5 and calls == [1]


def test_the_batch_limit_holds_and_order_is_kept():
    batcher, gate = gated(lambda batch: batch * 10, n=9, max_batch=4)
    outputs = _call_concurrently(batcher, [np.array([float(i)]) for i in range(10)], hold_first_until_queued=9)
    assert [float(o[0]) for o in outputs] == [10.0 * i for i in range(10)]
    assert gate.sizes == [1, 4, 4, 1]


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_runs():
    def fail_on_negative(batch):
        if (batch < 0).any():
            raise ValueError("negative input")
        return batch + 1

    batcher, gate = gated(fail_on_negative, n=2, max_batch=2)
    outputs = _call_concurrently(batcher, [np.array([1.0]), np.array([-1.0]), np.array([2.0])],
                                 hold_first_until_queued=2)
    assert float(outputs[0][0]) == 2.0
    assert all(isinstance(o, ValueError) and "negative input" in str(o) for o in outputs[1:])
    assert float(batcher(np.array([5.0]))[0]) == 6.0, "the batcher is not left stuck after an error"


def test_a_wait_window_collects_queries_that_arrive_within_it():
    sizes = []
    batcher = MicroBatcher(lambda batch: sizes.append(len(batch)) or batch, max_batch=3, max_wait_s=2.0)
    start = time.perf_counter()
    _call_concurrently(batcher, [np.array([float(i)]) for i in range(3)])
    assert sizes == [3], "the first caller waited for the others instead of running alone"
    assert time.perf_counter() - start < 1.5, "a full batch starts before the window ends"


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda batch: batch, max_batch=0)
