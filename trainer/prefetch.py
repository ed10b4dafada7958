"""Batches prepared on a background thread while the accelerator runs the current step.

``PrefetchLoader`` wraps any ``BatchLoader``: a daemon thread calls the wrapped loader's
``next_batch()`` up to ``depth`` batches ahead, pins the token and mask tensors in page-locked memory
when the run is on CUDA (so that ``.to(device, non_blocking=True)`` is an asynchronous copy), and
hands them over in order. It is itself a ``BatchLoader``: ``state_dict()`` and ``cumulative_tokens``
describe the batches the loop has *taken*, not the ones read ahead, so a checkpoint written between
two steps resumes exactly where an unprefetched run would (each batch carries a copy of the wrapped
loader's state after it was drawn). Every call into the wrapped loader (the thread's ``next_batch``,
validation's ``heldout_batch``) holds one lock: the readers' shard caches are not thread-safe.

The thread draws at most ``limit`` batches (the steps left in the run), so it never reads past the
schedule's end; an exception in it is raised again by the ``next_batch()`` that would have returned
the failing batch.
"""

from __future__ import annotations

import copy
import queue
import threading

import torch

_DONE = object()


class PrefetchLoader:
    """A ``BatchLoader`` reading ``depth`` batches ahead of the loop on a background thread.

    Args:
        loader: the wrapped loader (already positioned: a resume loads its state first).
        limit: batches to draw in all (the steps left).
        depth: batches held ready (>= 1).
        pin_memory: pin the batch tensors (CUDA runs).
    """

    def __init__(self, loader, limit: int, depth: int = 2, pin_memory: bool = False):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.loader = loader
        self.pin_memory = pin_memory
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._state = copy.deepcopy(loader.state_dict())
        self._cumulative = dict(loader.cumulative_tokens)
        self._left = limit
        self._thread = threading.Thread(target=self._run, args=(limit,), name="batch-prefetch", daemon=True)
        self._thread.start()

    # -- the thread
    def _run(self, limit: int) -> None:
        try:
            for _ in range(limit):
                with self._lock:
                    batch = self.loader.next_batch()
                    state = copy.deepcopy(self.loader.state_dict())
                    cumulative = dict(self.loader.cumulative_tokens)
                if self.pin_memory:
                    batch = {k: (v.pin_memory() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
                if not self._put((batch, state, cumulative)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the loop, raised there
            self._put(e)
            return
        self._put(_DONE)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    # -- BatchLoader
    def next_batch(self) -> dict:
        if self._left <= 0:
            raise RuntimeError("PrefetchLoader: more batches asked for than its limit")
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        if item is _DONE:
            raise RuntimeError("PrefetchLoader: the batch thread ended early")
        batch, self._state, self._cumulative = item
        self._left -= 1
        return batch

    def state_dict(self) -> dict:
        return copy.deepcopy(self._state)

    def load_state_dict(self, d: dict) -> None:
        raise RuntimeError("PrefetchLoader: load the wrapped loader's state before prefetching starts")

    @property
    def cumulative_tokens(self) -> dict[str, int]:
        return dict(self._cumulative)

    @property
    def heldout_buckets(self) -> list[str]:
        return self.loader.heldout_buckets

    def heldout_batch(self, bucket: str, multiple_of: int = 1) -> dict:
        with self._lock:
            return self.loader.heldout_batch(bucket, multiple_of=multiple_of)

    def phase_at(self, step: int) -> int:
        return self.loader.phase_at(step)

    def phase_weights(self, phase: int) -> dict[str, float]:
        return self.loader.phase_weights(phase)

    def close(self) -> None:
        """Stop the thread (batches read ahead are dropped)."""
        self._stop.set()
        self._thread.join(timeout=10)
