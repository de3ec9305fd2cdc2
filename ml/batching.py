"""Micro-batching: single inputs from concurrent threads, run together through one batched function.

    batcher = MicroBatcher(embedder.embed_batch, max_batch=8)
    vector = batcher(array)          # from any thread: one (h, w, 3) input in, its one output row back

A web process serves several requests at once on threads, and each search needs one forward pass of one
image. Run one by one, the passes queue behind each other anyway (the cores are shared), and a pass of n
images costs less than n passes of one. So the first caller that finds the model idle runs at once with what
is queued (itself, at least); callers that arrive while a pass runs queue up and go together in the next one,
up to `max_batch`. Nobody waits for a timer: an idle process answers a lone request as fast as before, and
under load the batches grow by themselves. Outputs do not depend on the batch (each row is computed from its
own input alone), so a caller gets what it would have got alone, up to float rounding of the kernels.

No Django here (ml/ is a plain library).
"""
from __future__ import annotations

import threading
from collections import deque

import numpy as np

__all__ = ["MicroBatcher"]


class _Slot:
    __slots__ = ("input", "output", "error", "done")

    def __init__(self, value):
        self.input = value
        self.output = None
        self.error: BaseException | None = None
        self.done = False


class MicroBatcher:
    """Calls `batch_fn(stacked inputs) -> stacked outputs` for inputs submitted by concurrent threads.

    `max_batch`: the most inputs one call takes. `max_wait_s`: how long the caller that runs a batch waits for
    more inputs before it starts, when fewer than `max_batch` are queued (0: never; the batch is whatever queued
    while the previous call ran). `stats` counts calls and inputs (how much batching happened)."""

    def __init__(self, batch_fn, max_batch: int = 8, max_wait_s: float = 0.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.batch_fn = batch_fn
        self.max_batch = int(max_batch)
        self.max_wait_s = max(0.0, float(max_wait_s))
        self._queue: deque[_Slot] = deque()
        self._running = False
        self._changed = threading.Condition()
        self.stats = {"calls": 0, "inputs": 0}

    def __call__(self, value: np.ndarray) -> np.ndarray:
        slot = _Slot(value)
        with self._changed:
            self._queue.append(slot)
            if self._running and self.max_wait_s > 0:
                self._changed.notify_all()  # a caller waiting for a fuller batch counts the queue again
            while True:
                if slot.done:
                    break
                if not self._running:
                    batch = self._take_batch()
                    self._run(batch)  # releases the lock while the batch runs
                    continue
                self._changed.wait()
        if slot.error is not None:
            raise slot.error
        return slot.output

    def _take_batch(self) -> list[_Slot]:
        """With the lock held: the next inputs (oldest first), after waiting up to max_wait_s for a full batch."""
        self._running = True
        if self.max_wait_s > 0 and len(self._queue) < self.max_batch:
            self._changed.wait_for(lambda: len(self._queue) >= self.max_batch, timeout=self.max_wait_s)
        return [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]

    def _run(self, batch: list[_Slot]) -> None:
        """With the lock held on entry and exit; the batch itself runs without it."""
        self._changed.release()
        try:
            try:
                outputs = self.batch_fn(np.stack([slot.input for slot in batch]))
                if len(outputs) != len(batch):
                    raise RuntimeError(f"batch function returned {len(outputs)} outputs for {len(batch)} inputs")
                for slot, output in zip(batch, outputs):
                    slot.output = output
            except BaseException as error:  # noqa: BLE001 - every caller of the batch gets the error
                for slot in batch:
                    slot.error = error
        finally:
            self._changed.acquire()
            for slot in batch:
                slot.done = True
            self.stats["calls"] += 1
            self.stats["inputs"] += len(batch)
            self._running = False
            self._changed.notify_all()
