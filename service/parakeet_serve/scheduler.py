"""Dynamic micro-batching in front of the engine.

One asyncio task owns a bounded queue; each entry carries its reply future and enqueue time.
The task gathers a batch (up to `max_batch`, waiting at most `window_s` for more once it has
one), drops entries whose caller left or that waited past their time-to-live, and runs the
batch on a single worker thread, so the event loop never waits on the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from parakeet_serve.engine.types import Transcript
from parakeet_serve.errors import NotReady, QueueFull, QueueTimeout

log = logging.getLogger(__name__)


class BatchEngine(Protocol):
    """What the scheduler needs of an engine."""

    def transcribe(self, audios: Sequence[np.ndarray], alternatives: Sequence[int] | None = None) -> list[Transcript]:
        ...


@dataclass
class _Job:
    audio: np.ndarray
    alternatives: int
    reply: asyncio.Future[Transcript]
    enqueued: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class BatchStats:
    """What one batch cost, for logs and (later) metrics."""

    size: int
    audio_s: float
    compute_s: float


class Scheduler:
    """Queues recognition work and runs it in micro-batches on one inference thread."""

    def __init__(
        self,
        engine: BatchEngine,
        *,
        sample_rate: int,
        window_s: float,
        max_batch: int,
        capacity: int,
        max_wait_s: float,
    ) -> None:
        self._engine = engine
        self._sample_rate = sample_rate
        self._window_s = window_s
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=capacity)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None
        self.last_batch: BatchStats | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        """Stop taking work; whatever is still queued is answered with NotReady."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.reply.done():
                job.reply.set_exception(NotReady("The server is shutting down."))
        self._worker.shutdown(wait=True)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def transcribe(self, audio: np.ndarray, alternatives: int = 1) -> Transcript:
        """Recognise one mono audio at the engine's rate; cancelling the caller frees its slot."""
        if self._task is None or self._task.done():
            raise NotReady("The inference scheduler is not running.")
        job = _Job(audio, alternatives, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(
                f"The server is at capacity ({self._queue.maxsize} requests queued); retry in a moment.",
                retry_after_s=max(self._window_s, 0.5),
            ) from None
        try:
            return await job.reply
        finally:
            job.reply.cancel()  # a caller that left: the batcher skips its job

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            if batch:
                await self._execute(batch)

    async def _gather(self) -> list[_Job]:
        first = await self._queue.get()
        batch = [first]
        deadline = time.monotonic() + self._window_s
        while len(batch) < self._max_batch:
            if self._queue.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(self._queue.get_nowait())
        return [job for job in batch if self._admit(job)]

    def _admit(self, job: _Job) -> bool:
        """Keep a job only if its caller still waits and it has not outlived its time-to-live."""
        if job.reply.done():
            return False
        waited = time.monotonic() - job.enqueued
        if waited > self._max_wait_s:
            job.reply.set_exception(
                QueueTimeout(f"The request waited {waited:.1f} s in the queue, past the {self._max_wait_s:g} s limit.")
            )
            return False
        return True

    async def _execute(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            transcripts = await loop.run_in_executor(
                self._worker, self._engine.transcribe, [j.audio for j in batch], [j.alternatives for j in batch]
            )
        except Exception as exc:  # a failed batch fails its requests, never the scheduler
            log.exception("inference batch failed", extra={"batch_size": len(batch)})
            for job in batch:
                if not job.reply.done():
                    job.reply.set_exception(exc)
            return
        self.last_batch = BatchStats(
            size=len(batch),
            audio_s=sum(len(j.audio) for j in batch) / self._sample_rate,
            compute_s=time.perf_counter() - started,
        )
        for job, transcript in zip(batch, transcripts, strict=True):
            if not job.reply.done():
                job.reply.set_result(transcript)
