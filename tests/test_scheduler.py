"""Micro-batching boundaries, admission control and callers that leave, one at a time.

The engine here is a recorder that can be held, so that what is queued while a batch runs is
exact; it stands in for the model, not for the scheduler under test.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from parakeet_serve.engine.streaming import StepOutput, StreamInput, StreamState
from parakeet_serve.engine.types import Hypothesis, Transcript
from parakeet_serve.errors import EngineFailure, NotReady, QueueFull, QueueTimeout
from parakeet_serve.scheduler import MAX_FINISHING, MAX_WINDOWS, Scheduler


class HeldWords:
    """A recognition whose words are built once `gate` is set, noting the thread that builds them."""

    def __init__(self, text: str, engine: HeldEngine) -> None:
        self.text, self.engine = text, engine

    def transcript(self) -> Transcript:
        self.engine.built_on.append(threading.current_thread().name)
        self.engine.words_gate.wait(30)
        if self.engine.fail_words:
            raise ValueError("no words")
        return Transcript((Hypothesis(self.text, 1.0),))


class HeldEngine:
    """Answers each audio with its length; blocks while `gate` is clear, and its answers' words are
    built only while `words_gate` is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.words_gate = threading.Event()
        self.words_gate.set()
        self.batches: list[list[int]] = []
        self.built_on: list[str] = []
        self.entered = 0
        self.fail = False
        self.fail_words = False

    def recognise(self, audios: Sequence[np.ndarray], alternatives: Sequence[int] | None = None,
                  boosts: Sequence[object] | None = None) -> list[HeldWords]:
        self.entered += 1
        self.gate.wait(30)
        self.batches.append([len(a) for a in audios])
        if self.fail:
            raise RuntimeError("model exploded")
        return [HeldWords(str(len(a)), self) for a in audios]


class StepRecorder:
    """Stands in for the streaming engine: records each step batch in the engine's shared log."""

    def __init__(self, engine: HeldEngine) -> None:
        self.engine = engine

    def open(self, boost: object = None, endpoint_s: float = 0.0) -> StreamState:
        return StreamState(endpoint_s=endpoint_s)

    def close(self, state: StreamState) -> None:
        pass

    def step(self, inputs: Sequence[StreamInput]) -> list[StepOutput]:
        self.engine.batches.append([-len(i.audio) for i in inputs])  # negative: a step batch
        return [StepOutput((), 0, len(i.audio) / 16000, 0.0) for i in inputs]


def audio(n: int) -> np.ndarray:
    return np.zeros(n, np.float32)


async def started(engine: HeldEngine, **overrides) -> Scheduler:
    options = {
        "window_s": 0.0, "max_batch": 4, "capacity": 16, "max_wait_s": 30.0,
        "streamer": StepRecorder(engine), "max_streams": 2, **overrides,
    }
    scheduler = Scheduler(engine, **options)
    await scheduler.start()
    return scheduler


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def batches_behind_a_held_one(lengths: list[int]) -> tuple[list[str], list[list[int]]]:
    """Queue audios of `lengths` while a first one (length 1) holds the engine, then release it: each
    job's answer, and the batches the engine ran."""
    async def scenario() -> tuple[list[str], list[list[int]]]:
        engine = HeldEngine()
        engine.gate.clear()
        scheduler = await started(engine)
        first = asyncio.create_task(scheduler.transcribe(audio(1)))
        await until(lambda: engine.entered == 1)  # the first job is in the (held) engine
        rest = [asyncio.create_task(scheduler.transcribe(audio(n))) for n in lengths]
        await until(lambda: scheduler.queued == len(lengths))
        engine.gate.set()
        results = await asyncio.gather(first, *rest)
        await scheduler.stop()
        return [r.best.text for r in results], engine.batches

    return asyncio.run(scenario())


def test_batches_never_exceed_max_batch_and_keep_order() -> None:
    texts, batches = batches_behind_a_held_one(list(range(2, 11)))
    assert texts == [str(n) for n in range(1, 11)]
    assert batches == [[1], [2, 3, 4, 5], [6, 7, 8, 9], [10]]


def test_a_queue_longer_than_a_batch_is_batched_by_length_oldest_first() -> None:
    lengths = [100, 900, 110, 950, 120, 905, 130, 910, 500]  # short and long ones interleaved
    texts, batches = batches_behind_a_held_one(lengths)
    assert texts == [str(n) for n in [1, *lengths]]  # each its own answer
    # led by the oldest each time, with the lengths nearest it: no batch mixes short and long
    assert batches == [[1], [100, 110, 120, 130], [900, 950, 905, 910], [500]]


def test_window_gathers_work_that_arrives_within_it() -> None:
    async def scenario() -> None:
        engine = HeldEngine()
        scheduler = await started(engine, window_s=0.5)
        first = asyncio.create_task(scheduler.transcribe(audio(1)))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(scheduler.transcribe(audio(2)))
        await asyncio.gather(first, second)
        assert engine.batches == [[1, 2]]
        await scheduler.stop()

    asyncio.run(scenario())


def test_a_batch_waits_while_requests_keep_arriving_but_no_longer_than_max_windows() -> None:
    """Callers answered together send again a few ms apart: each arrival within a window of the last
    keeps the batch open, so they are not split at one window from the first; the wait has a cap."""
    async def scenario() -> None:
        engine = HeldEngine()
        scheduler = await started(engine, window_s=0.1, max_batch=32, capacity=64)
        requests = []
        for n in range(1, 17):  # one every 40 ms for 640 ms: each within a window of the one before
            requests.append(asyncio.create_task(scheduler.transcribe(audio(n))))
            await asyncio.sleep(0.04)
        await asyncio.gather(*requests)
        await scheduler.stop()
        first = engine.batches[0]
        assert first == list(range(1, len(first) + 1))
        assert len(first) > 3  # more than the three arrivals of the first window
        assert len(first) <= MAX_WINDOWS * 0.1 / 0.04 + 1  # closed after MAX_WINDOWS windows, not at the 16th
        assert [n for batch in engine.batches for n in batch] == list(range(1, 17))

    asyncio.run(scenario())


def test_a_streams_final_waits_one_window_however_many_requests_keep_arriving() -> None:
    async def scenario() -> None:
        engine = HeldEngine()
        scheduler = await started(engine, window_s=0.1, max_batch=32, capacity=64)
        final = asyncio.create_task(scheduler.transcribe_final(audio(100)))
        requests = []
        for n in range(1, 9):  # one every 40 ms: without the stream's final, they would keep the batch open
            requests.append(asyncio.create_task(scheduler.transcribe(audio(n))))
            await asyncio.sleep(0.04)
        await asyncio.gather(final, *requests)
        await scheduler.stop()
        assert engine.batches[0] == [100]
        assert len(engine.batches[1]) <= 3  # only the requests of the final's window went with it

    asyncio.run(scenario())


def test_full_queue_refuses_with_a_retry_hint() -> None:
    async def scenario() -> None:
        engine = HeldEngine()
        engine.gate.clear()
        scheduler = await started(engine, capacity=2)
        running = asyncio.create_task(scheduler.transcribe(audio(1)))
        await until(lambda: engine.entered == 1)
        queued = [asyncio.create_task(scheduler.transcribe(audio(2))) for _ in range(2)]
        await until(lambda: scheduler.queued == 2)
        with pytest.raises(QueueFull, match="capacity") as info:
            await scheduler.transcribe(audio(3))
        assert info.value.retry_after_s > 0
        engine.gate.set()
        await asyncio.gather(running, *queued)
        await scheduler.stop()

    asyncio.run(scenario())


def test_work_past_its_ttl_is_dropped_before_compute() -> None:
    async def scenario() -> None:
        engine = HeldEngine()
        engine.gate.clear()
        scheduler = await started(engine, max_wait_s=0.05)
        running = asyncio.create_task(scheduler.transcribe(audio(1)))
        await until(lambda: engine.entered == 1)
        stale = asyncio.create_task(scheduler.transcribe(audio(2)))
        await asyncio.sleep(0.1)  # longer than the TTL, on purpose
        engine.gate.set()
        await running
        with pytest.raises(QueueTimeout, match="waited"):
            await stale
        assert engine.batches == [[1]]
        await scheduler.stop()

    asyncio.run(scenario())


def test_callers_that_leave_cost_no_compute() -> None:
    async def scenario() -> None:
        engine = HeldEngine()
        engine.gate.clear()
        scheduler = await started(engine)
        running = asyncio.create_task(scheduler.transcribe(audio(1)))
        await until(lambda: engine.entered == 1)
        leaving = asyncio.create_task(scheduler.transcribe(audio(2)))
        staying = asyncio.create_task(scheduler.transcribe(audio(3)))
        await until(lambda: scheduler.queued == 2)
        leaving.cancel()
        engine.gate.set()
        await asyncio.gather(running, staying)
        assert engine.batches == [[1], [3]]
        await scheduler.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(("failing", "error", "message"), [("fail", RuntimeError, "exploded"),
                                                           ("fail_words", ValueError, "no words")])
def test_a_batch_that_fails_to_run_or_to_build_its_words_fails_its_callers_and_the_scheduler_goes_on(
    failing: str, error: type[Exception], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its callers get the core's one sentence, never the engine's words; the cause is logged once."""
    async def scenario() -> None:
        engine = HeldEngine()
        scheduler = await started(engine)
        setattr(engine, failing, True)
        with pytest.raises(EngineFailure, match="failed inside the server"):
            await scheduler.transcribe(audio(1))
        setattr(engine, failing, False)
        assert (await scheduler.transcribe(audio(2))).best.text == "2"
        await scheduler.stop()

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    (logged,) = [r for r in caplog.records if r.exc_info]
    assert isinstance(logged.exc_info[1], error) and message in str(logged.exc_info[1])


def test_the_next_batch_runs_while_the_last_ones_words_are_built_on_another_thread() -> None:
    """Building text and words is Python that would idle a GPU: the inference thread leaves it to the
    finishing thread and goes on, at most `MAX_FINISHING` batches ahead."""

    async def scenario() -> None:
        engine = HeldEngine()
        engine.words_gate.clear()
        scheduler = await started(engine, max_batch=1)
        requests = [asyncio.create_task(scheduler.transcribe(audio(n))) for n in (1, 2, 3)]
        await until(lambda: len(engine.batches) == MAX_FINISHING)  # batches ran, none answered yet
        await asyncio.sleep(0.05)
        assert len(engine.batches) == MAX_FINISHING and not any(r.done() for r in requests)
        engine.words_gate.set()
        assert [t.best.text for t in await asyncio.gather(*requests)] == ["1", "2", "3"]
        assert engine.built_on and all(name.startswith("finish") for name in engine.built_on)
        await scheduler.stop()

    asyncio.run(scenario())


def test_an_engine_that_answers_too_few_items_fails_its_callers_instead_of_leaving_them_waiting() -> None:
    class Short(HeldEngine):
        def recognise(self, audios: Sequence[np.ndarray], alternatives: Sequence[int] | None = None,
                      boosts: Sequence[object] | None = None) -> list[HeldWords]:
            return super().recognise(audios, alternatives, boosts)[:-1]

    async def scenario() -> None:
        scheduler = await started(Short())
        with pytest.raises(EngineFailure):
            await asyncio.wait_for(scheduler.transcribe(audio(1)), 5)
        await scheduler.stop()

    asyncio.run(scenario())


def test_stop_answers_running_and_queued_work_and_refuses_new_work() -> None:
    async def scenario() -> None:
        engine = HeldEngine()
        engine.gate.clear()
        scheduler = await started(engine)
        running = asyncio.create_task(scheduler.transcribe(audio(1)))
        await until(lambda: engine.entered == 1)
        queued = asyncio.create_task(scheduler.transcribe(audio(2)))
        await until(lambda: scheduler.queued == 1)
        threading.Timer(0.05, engine.gate.set).start()
        await scheduler.stop()
        with pytest.raises(NotReady):
            await queued
        with pytest.raises(NotReady):
            await scheduler.transcribe(audio(3))
        with pytest.raises(NotReady):  # the batch on the inference thread when it stopped
            await asyncio.wait_for(running, 5)

    asyncio.run(scenario())


def test_streams_beyond_the_maximum_are_refused_until_one_leaves() -> None:
    async def scenario() -> None:
        scheduler = await started(HeldEngine(), max_streams=2)
        with scheduler.stream(), scheduler.stream():
            assert scheduler.active_streams == 2
            with pytest.raises(QueueFull, match="maximum of 2 streams"), scheduler.stream():
                pass
        assert scheduler.active_streams == 0
        with scheduler.stream() as state:
            assert isinstance(state, StreamState)
        await scheduler.stop()

    asyncio.run(scenario())


def test_stream_steps_are_never_refused_and_go_before_queued_offline_work() -> None:
    async def scenario() -> None:
        engine = HeldEngine()
        engine.gate.clear()
        scheduler = await started(engine, capacity=2, max_batch=1)
        running = asyncio.create_task(scheduler.transcribe(audio(1)))
        await until(lambda: engine.entered == 1)
        queued = [asyncio.create_task(scheduler.transcribe(audio(n))) for n in (2, 3)]
        await until(lambda: scheduler.queued == 2)
        with scheduler.stream() as state:  # the offline queue is full, yet the stream's steps run
            steps = [asyncio.create_task(scheduler.step(StreamInput(state, audio(n)))) for n in (7, 8)]
            await asyncio.sleep(0.01)
            engine.gate.set()
            await asyncio.gather(running, *queued, *steps)
        # one batch of each kind in turn: a stream step, then offline work, then the next step
        assert engine.batches == [[1], [-7], [2], [-8], [3]]
        await scheduler.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("queued_in_time", [True, False])
def test_a_batch_waits_a_little_for_requests_still_decoding(queued_in_time: bool) -> None:
    """Announced work joins the batch being gathered; a withdrawn announcement delays nothing for long."""

    async def scenario() -> None:
        engine = HeldEngine()
        scheduler = await started(engine)  # window 0: without the announcement, a batch of one
        with scheduler.arriving() as queued:
            first = asyncio.create_task(scheduler.transcribe(audio(1)))
            await asyncio.sleep(0.02)  # "decoding", within the grace
            if queued_in_time:
                second = await scheduler.transcribe(audio(2), on_queued=queued)
        assert (await first).best.text == "1"
        if queued_in_time:
            assert second.best.text == "2" and engine.batches == [[1, 2]]
        else:
            assert engine.batches == [[1]]  # the announcement was withdrawn: the batch went alone
        await scheduler.stop()

    asyncio.run(scenario())
