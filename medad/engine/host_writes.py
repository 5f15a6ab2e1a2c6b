"""The host-write pipeline: results leave the device without making the scoring loop wait.

A :class:`HostBatch` copies one batch's image scores and native-size maps into pinned host memory without
blocking (on CUDA) and records an event; :class:`BackgroundWrites` hands such batches to a
:class:`~medad.engine.predictions.PredictionWriter` on one background thread, at most ``depth`` at a time. The
next forward pass is queued while the previous batch is still on its way to the disk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch


class BatchSink(Protocol):
    """Where a batch's results go: a :class:`~medad.engine.predictions.PredictionWriter` (or a test double)."""

    def add(self, indices: Sequence[int], image_scores: Sequence[float], maps: Sequence[np.ndarray]) -> None:
        """Store the scores and maps of the manifest rows ``indices``."""


class HostBatch:
    """One batch's results on their way from the device to the predictions store.

    On CUDA the copies go into pinned host memory without blocking, and an event marks their end, so the
    next batch's forward pass starts at once; the writer thread waits on the event, not the main loop.
    """

    def __init__(self, indices: list[int], scores: torch.Tensor, maps: list[torch.Tensor]) -> None:
        self.indices = indices
        self.event: torch.cuda.Event | None = None
        if scores.device.type == "cuda":
            host = [torch.empty(t.shape, dtype=torch.float32, pin_memory=True) for t in [scores, *maps]]
            for dst, src in zip(host, [scores, *maps], strict=True):
                dst.copy_(src, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
            self.scores, self.maps = host[0], host[1:]
        else:
            self.scores, self.maps = scores.float(), [m.float() for m in maps]

    def write(self, writer: BatchSink) -> None:
        """Wait for the copies, then hand the batch to the writer (runs on the writer thread)."""
        if self.event is not None:
            self.event.synchronize()
        writer.add(self.indices, self.scores.tolist(), [m.numpy() for m in self.maps])


class BackgroundWrites:
    """Hands :class:`HostBatch` results to a predictions writer on one background thread.

    At most ``depth`` batches are in flight: ``submit`` waits for the oldest beyond that, so memory stays bounded
    while the scoring loop goes on. Leaving the block normally waits for every write and raises its error;
    leaving it on an error still finishes the writes already handed over, so nothing computed is lost.
    """

    def __init__(self, writer: BatchSink, depth: int = 2) -> None:
        self.writer = writer
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._in_flight: deque[Future[None]] = deque()

    def __enter__(self) -> BackgroundWrites:
        return self

    def submit(self, batch: HostBatch) -> None:
        """Queue one batch's write; wait while more than ``depth`` are pending."""
        self._in_flight.append(self._pool.submit(batch.write, self.writer))
        while len(self._in_flight) > self.depth:
            self._in_flight.popleft().result()

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            while exc_type is None and self._in_flight:
                self._in_flight.popleft().result()
        finally:
            self._pool.shutdown(wait=True)
