"""Dynamic micro-batching in front of the engine.

Two kinds of work share one inference thread: whole audios (`Recognize`) in a bounded queue
with a time-to-live, and streaming steps of admitted streams. One asyncio task gathers work
(up to `max_batch` of each kind; once it has some, streams' work waits at most `window_s` for more,
requests as long as each arrives within `window_s` of the last, for at most `MAX_WINDOWS` windows,
and a little longer for requests known to be decoding their audio), drops
offline entries whose caller left or that waited past their time-to-live, and runs a batch of
stream steps, then a batch of offline work, in turn: neither kind can starve the other, and
the event loop never waits on the model. A batch's text and words are built on a second thread
while the inference thread runs the next batch (on a GPU it would otherwise idle meanwhile).

Streams are admitted up to `max_streams` at a time; an admitted stream's steps are never
refused, so a stream that got in keeps its latency while newcomers are turned away. The same holds
for its ended utterances' second pass (`transcribe_final`), which runs after the steps and before
any queued `Recognize` work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from parakeet_serve.engine.streaming import StepOutput, StreamInput
from parakeet_serve.engine.types import Recognition, Transcript, transcripts
from parakeet_serve.errors import EngineFailure, NotReady, QueueFull, QueueTimeout, StreamLimit, StreamsBehind
from parakeet_serve.telemetry import Metrics, Timing
from parakeet_serve.word_boost import WordBoost

if TYPE_CHECKING:
    from parakeet_serve.engine.streaming import StreamState

log = logging.getLogger(__name__)

# How much longer than the window a batch of offline work waits for requests still decoding their
# audio: closed-loop callers all send again when a batch answers them, and without this wait their
# requests split into two half-full batches that alternate for good.
ARRIVAL_GRACE_S = 0.05

# Batches whose words may be building at once: the inference thread runs ahead of the finishing one
# by at most this many batches, so a slow finisher cannot pile up finished work in memory.
MAX_FINISHING = 2

# While requests keep arriving, a batch waits for them up to this many windows: answered callers
# send again within a few ms of each other, and a window counted from the first of them split their
# requests into a full batch and a small one (13 batches instead of 11 for the demo set at 32 callers).
MAX_WINDOWS = 4

# Streams' recent steps judged for admission (`LagWatch`): long enough to hold a few steps of every stream,
# short enough that the door opens again soon after the streams catch up.
LAG_WINDOW_S = 10.0
LAG_MIN_STEPS = 8


class BatchEngine(Protocol):
    """What the scheduler needs of an engine."""

    def recognise(self, audios: Sequence[np.ndarray], alternatives: Sequence[int] | None = None,
                  boosts: Sequence[WordBoost | None] | None = None) -> list[Recognition]:
        ...


class StepEngine(Protocol):
    """What the scheduler needs to run streaming steps."""

    def open(self, boost: WordBoost | None = None) -> StreamState:
        ...

    def close(self, state: StreamState) -> None:
        ...

    def step(self, inputs: Sequence[StreamInput]) -> list[StepOutput]:
        ...


@dataclass
class _Step:
    item: StreamInput
    reply: asyncio.Future[StepOutput]
    timing: Timing


@dataclass
class _Job:
    audio: np.ndarray
    alternatives: int
    reply: asyncio.Future[Transcript]
    timing: Timing
    boost: WordBoost | None = None
    enqueued: float = field(default_factory=time.monotonic)


def inference_thread() -> ThreadPoolExecutor:
    """The one thread that runs the model. All torch work of a process belongs on it: on a small
    CPU, compute split over several threads ran a third slower than the same work on one."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")


class LagWatch:
    """How far behind real time the streams' recent steps ran (`StreamSession` reports each step's lag): the
    median of the last `LAG_WINDOW_S`, once at least `LAG_MIN_STEPS` steps ran in it; a median, so one odd
    client (a burst after a network stall) does not close the door to others."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._steps: deque[tuple[float, float]] = deque()  # (when, lag)

    def observe(self, lag_s: float) -> None:
        if self.limit_s:
            self._steps.append((time.monotonic(), lag_s))

    def behind(self) -> float | None:
        """The recent median lag, when it passes the limit."""
        since = time.monotonic() - LAG_WINDOW_S
        while self._steps and self._steps[0][0] < since:
            self._steps.popleft()
        if len(self._steps) < LAG_MIN_STEPS:
            return None
        median = statistics.median(lag for _, lag in self._steps)
        return median if median > self.limit_s else None


class Scheduler:
    """Queues recognition work and streaming steps and runs them in micro-batches on one thread."""

    def __init__(
        self,
        engine: BatchEngine,
        *,
        window_s: float,
        max_batch: int,
        capacity: int,
        max_wait_s: float,
        streamer: StepEngine | None = None,
        max_streams: int = 0,
        max_stream_lag_s: float = 0.0,
        metrics: Metrics | None = None,
        worker: ThreadPoolExecutor | None = None,
    ) -> None:
        self._engine = engine
        self._streamer = streamer
        self._window_s = window_s
        self._arriving = 0  # Recognize requests decoding their audio, not yet queued
        self._max_batch = max_batch
        self._capacity = capacity
        self._max_wait_s = max_wait_s
        self.max_streams = max_streams
        self.active_streams = 0
        self.lag = LagWatch(max_stream_lag_s)
        self._queue: deque[_Job] = deque()
        self._finals: deque[_Job] = deque()  # admitted streams' utterances: never refused, first in line
        self._steps: deque[_Step] = deque()
        self._wake = asyncio.Event()
        self._worker = worker or inference_thread()
        self._finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish")  # no torch on it
        self._finishing: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._metrics = metrics or Metrics()
        self._metrics.bind_queue(lambda: self.active_streams, max_streams, lambda: len(self._queue), capacity)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        """Stop taking work; whatever is still queued or on the inference thread is answered with NotReady."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*self._finishing, return_exceptions=True)  # batches already run are answered
        for pending in (*self._queue, *self._finals, *self._steps):
            if not pending.reply.done():
                pending.reply.set_exception(NotReady("The server is shutting down."))
        self._queue.clear()
        self._finals.clear()
        self._steps.clear()
        self._worker.shutdown(wait=True)
        self._finisher.shutdown(wait=True)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[Callable[[], None]]:
        """Announce a request that is decoding its audio, so a batch being gathered waits for it.

        Pass the yielded callback as `transcribe`'s `on_queued`; leaving the block withdraws the
        announcement if the request never got queued (its audio was bad).
        """
        pending = True

        def arrived() -> None:
            nonlocal pending
            if pending:
                pending = False
                self._arriving -= 1
                self._wake.set()

        self._arriving += 1
        try:
            yield arrived
        finally:
            arrived()

    async def transcribe(
        self, audio: np.ndarray, alternatives: int = 1, timing: Timing | None = None,
        on_queued: Callable[[], None] = lambda: None, boost: WordBoost | None = None,
    ) -> Transcript:
        """Recognise one mono audio at the engine's rate; cancelling the caller frees its slot.

        `timing`, when given, is filled with when the work waited and ran; `boost` favours phrases.
        """
        self._check_running()
        if len(self._queue) >= self._capacity:
            raise QueueFull(
                f"The server is at capacity ({self._capacity} requests queued); retry in a moment.",
                retry_after_s=max(self._window_s, 0.5),
            )
        job = _Job(audio, alternatives, asyncio.get_running_loop().create_future(), timing or Timing("offline"), boost)
        return await self._await(self._queue, job, on_queued)

    async def transcribe_final(self, audio: np.ndarray, timing: Timing | None = None,
                               boost: WordBoost | None = None) -> Transcript:
        """Recognise an admitted stream's ended utterance (the final of two-pass streaming), as
        `transcribe` would, but never refused for capacity and ahead of queued `Recognize` work."""
        self._check_running()
        job = _Job(audio, 1, asyncio.get_running_loop().create_future(), timing or Timing("final"), boost)
        return await self._await(self._finals, job)

    async def _await(self, queue: deque[_Job], job: _Job, on_queued: Callable[[], None] = lambda: None) -> Transcript:
        queue.append(job)
        on_queued()
        self._wake.set()
        try:
            return await job.reply
        finally:
            job.reply.cancel()  # a caller that left: the batcher skips its job

    @contextlib.contextmanager
    def stream(self, boost: WordBoost | None = None, endpoint_s: float = 0.0) -> Iterator[StreamState]:
        """Admit a stream for the duration of the block, or refuse it with `QueueFull` (its state as
        `Streamer.open` makes it)."""
        self._check_running()
        if self._streamer is None:
            raise NotReady("This model cannot stream.")
        if self.active_streams >= self.max_streams:
            raise StreamLimit(
                f"The server holds its maximum of {self.max_streams} streams; retry in a moment or on another replica.",
                retry_after_s=1.0,
            )
        if (lag := self.lag.behind()) is not None:
            raise StreamsBehind(
                f"The streams this server holds are {lag:.1f} s behind real time (more than its "
                f"PARAKEET_MAX_STREAM_LAG_S of {self.lag.limit_s:g} s); retry in a moment or on another replica.",
                retry_after_s=2.0,
            )
        self.active_streams += 1
        state = self._streamer.open(boost, endpoint_s)
        try:
            yield state
        finally:
            self._streamer.close(state)
            self.active_streams -= 1

    async def step(self, item: StreamInput, timing: Timing | None = None) -> StepOutput:
        """Run one streaming step of an admitted stream (never refused for capacity)."""
        self._check_running()
        step = _Step(item, asyncio.get_running_loop().create_future(), timing or Timing("stream"))
        self._steps.append(step)
        self._wake.set()
        try:
            return await step.reply
        finally:
            step.reply.cancel()

    def _check_running(self) -> None:
        if self._task is None or self._task.done():
            raise NotReady("The inference scheduler is not running.")

    async def _run(self) -> None:
        while True:
            await self._gather()
            await self._run_batches()

    async def _run_batches(self) -> None:
        """A batch of stream steps, one of streams' finals, then one of offline work; returning drops
        them, so an idle scheduler holds no finished stream's state."""
        steps = self._take(self._steps)
        if steps:
            await self._execute_steps(steps)
        finals = [job for job in self._take_by_length(self._finals) if not job.reply.done()]
        if finals:
            await self._execute(finals)
        jobs = [job for job in self._take_by_length(self._queue) if self._admit(job)]
        if jobs:
            await self._execute(jobs)

    async def _gather(self) -> None:
        """Wait for work, then for a fuller batch: with streams' work waiting, up to `window_s`; with
        only requests, until `window_s` passes with none arriving, at most `MAX_WINDOWS` windows (longer
        for announced ones)."""
        while not (self._queue or self._steps or self._finals):
            self._wake.clear()
            await self._wake.wait()
        began = time.monotonic()
        while max(len(self._queue), len(self._steps)) < self._max_batch:
            now = time.monotonic()
            if self._steps or self._finals:  # streams keep their pace
                deadline = began + self._window_s
            else:
                last = max(began, self._queue[-1].enqueued) if self._queue else began  # the newest arrival
                grace = ARRIVAL_GRACE_S if self._arriving else 0.0
                deadline = min(last, began + (MAX_WINDOWS - 1) * self._window_s) + self._window_s + grace
            if deadline <= now:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), deadline - now)

    def _take(self, queue: deque) -> list:
        return [queue.popleft() for _ in range(min(len(queue), self._max_batch))]

    def _take_by_length(self, queue: deque[_Job]) -> list[_Job]:
        """A batch led by the oldest job, filled with the queued jobs nearest it in length: a batch
        costs as much as its longest item, so mixing lengths pays for padding (39% of the demo set's
        encoder work in arrival order). The oldest always goes, so no job waits behind newer ones
        for more batches than there are jobs older than it."""
        if len(queue) <= self._max_batch:
            return self._take(queue)
        lead = len(queue[0].audio)
        rest = sorted(range(1, len(queue)), key=lambda i: abs(len(queue[i].audio) - lead))[: self._max_batch - 1]
        chosen = {0, *rest}
        batch = [job for i, job in enumerate(queue) if i in chosen]
        kept = [job for i, job in enumerate(queue) if i not in chosen]
        queue.clear()
        queue.extend(kept)
        return batch

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
        """Run a batch on the inference thread and hand its words to the finishing thread, returning
        as soon as the model is done (after waiting for room among the batches still finishing)."""
        recognitions = await self._call(
            batch, self._engine.recognise, [j.audio for j in batch], [j.alternatives for j in batch],
            [j.boost for j in batch],
        )
        if recognitions is None:
            return
        task = asyncio.create_task(self._finish(batch, recognitions))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        if len(self._finishing) >= MAX_FINISHING:
            await asyncio.wait(self._finishing, return_when=asyncio.FIRST_COMPLETED)

    async def _finish(self, batch: list[_Job], recognitions: list[Recognition]) -> None:
        try:
            built = await asyncio.get_running_loop().run_in_executor(self._finisher, transcripts, recognitions)
            for job, transcript in zip(batch, built, strict=True):
                if not job.reply.done():
                    job.reply.set_result(transcript)
        except Exception:  # a detached task: whatever fails must reach the callers
            log.exception("building a batch's transcripts failed", extra={"batch_size": len(batch)})
            self._fail(batch, EngineFailure())

    async def _execute_steps(self, steps: list[_Step]) -> None:
        live = [s for s in steps if not s.reply.done()]
        if not live or self._streamer is None:
            return
        outputs = await self._call(live, self._streamer.step, [s.item for s in live])
        if outputs is None:
            return
        for step, output in zip(live, outputs, strict=True):
            if not step.reply.done():
                step.reply.set_result(output)

    async def _call(self, batch: Sequence[_Job | _Step], fn, *args) -> list | None:
        """Run `fn` on the inference thread; a failed batch fails its callers, never the scheduler."""
        started = time.time_ns()
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)
            self._account(batch, started, time.time_ns())
            return result
        except asyncio.CancelledError:  # stopped mid-batch: its callers are answered, not left waiting
            self._fail(batch, NotReady("The server is shutting down."))
            raise
        except Exception:
            log.exception("inference batch failed", extra={"batch_size": len(batch), "kind": batch[0].timing.kind})
            self._fail(batch, EngineFailure())
            return None

    @staticmethod
    def _fail(batch: Sequence[_Job | _Step], exc: Exception) -> None:
        for pending in batch:
            if not pending.reply.done():
                pending.reply.set_exception(exc)

    def _account(self, batch: Sequence[_Job | _Step], started_ns: int, finished_ns: int) -> None:
        """Stamp each item's timing and record the batch in the metrics."""
        kind = batch[0].timing.kind
        for pending in batch:
            t = pending.timing
            t.started_ns, t.finished_ns, t.batch_size = started_ns, finished_ns, len(batch)
            self._metrics.queue_wait.labels(kind).observe(t.queue_wait_s)
        seconds = (finished_ns - started_ns) / 1e9
        self._metrics.batch_size.labels(kind).observe(len(batch))
        self._metrics.inference_duration.labels(kind).observe(seconds)
        self._metrics.inference_seconds.labels(kind).inc(seconds)
