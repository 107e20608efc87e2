"""Streaming metrics that tell the truth under load: a server that falls behind real time reads a real-time
client's audio later (gRPC's flow control holds it back), so latencies counted from the reads looked fine while
finals came tens of seconds late. The speaking clock dates audio as a real-time client said it; the lag of
each step, the finals' latency and admission follow it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from parakeet_serve.engine import NemoEngine
from parakeet_serve.scheduler import LAG_MIN_STEPS, LagWatch
from parakeet_serve.session import RESYNC_WAIT_S, SpeakingClock
from tests.conftest import LoopThread, rpc_code, start_server
from tests.riva.test_streaming import PACKAGE, RATE, as_bytes, config, pcm_of
from tests.telemetry.scrape import Scrape

CHUNK_S = 0.1


def test_a_server_that_keeps_up_dates_audio_by_its_reads() -> None:
    clock = SpeakingClock(RATE)
    for n in range(1, 6):  # a chunk every 100 ms, each handled in 20 ms: every read waited for the client
        read_at = n * CHUNK_S
        clock.message(read_at)
        assert clock.said(n * 1600) == read_at
        clock.ready(read_at + 0.02)


def test_a_server_behind_dates_audio_by_when_a_real_time_client_said_it() -> None:
    clock = SpeakingClock(RATE)
    clock.message(0.0)
    assert clock.said(1600) == 0.0
    for n in range(2, 12):  # each chunk read as soon as the last is handled, 300 ms a chunk
        read_at = (n - 1) * 0.3
        clock.ready(read_at)  # ready and read at once: the chunk was waiting, held back by flow control
        clock.message(read_at)
        assert clock.said(n * 1600) == pytest.approx((n - 1) * CHUNK_S)
    assert read_at - clock.said(11 * 1600) == pytest.approx(2.0)  # 2 s behind after 1.1 s of audio


def test_faster_than_real_time_audio_is_dated_by_its_reads_and_a_pause_resyncs() -> None:
    clock = SpeakingClock(RATE)
    clock.message(0.0)
    clock.said(RATE)
    clock.ready(0.01)
    clock.message(0.01 + RESYNC_WAIT_S / 2)  # a minute of audio a moment later: it cannot be said in the future
    assert clock.said(61 * RATE) == 0.01 + RESYNC_WAIT_S / 2
    clock.ready(0.1)
    clock.message(5.1)  # push-to-talk: the client paused for 5 s; its next chunk is said as it comes
    assert clock.said(62 * RATE) == 5.1


def test_the_lag_watch_judges_the_median_of_enough_recent_steps() -> None:
    watch = LagWatch(limit_s=1.0)
    for _ in range(LAG_MIN_STEPS - 1):
        watch.observe(5.0)
    assert watch.behind() is None  # too few steps to judge
    watch.observe(5.0)
    assert watch.behind() == 5.0
    for _ in range(LAG_MIN_STEPS * 2):  # most streams keep up: one odd client does not close the door
        watch.observe(0.1)
    assert watch.behind() is None
    assert LagWatch(limit_s=0).behind() is None


class SlowSteps:
    """The real engine whose streaming steps each take `delay_s` longer, as on a machine too busy for its
    streams."""

    def __init__(self, engine: NemoEngine, delay_s: float) -> None:
        self._engine, self.delay_s = engine, delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def warmup(self, shape: object = None) -> None:
        pass

    def streamer(self, left_context_s: float) -> Any:
        return _SlowStreamer(self._engine.streamer(left_context_s), self)


class _SlowStreamer:
    def __init__(self, streamer: Any, owner: SlowSteps) -> None:
        self._streamer, self._owner = streamer, owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._streamer, name)

    def step(self, inputs: Any) -> Any:
        time.sleep(self._owner.delay_s)
        return self._streamer.step(inputs)


@pytest.fixture
def slow(loop_thread: LoopThread, demo_engine: NemoEngine) -> Iterator[tuple[Any, SlowSteps]]:
    engine = SlowSteps(demo_engine, delay_s=0.0)
    served = start_server(loop_thread, engine, model_id="demo", max_stream_lag_s=0.5, max_streams=8)
    yield served, engine
    served.stop()


def paced(data: bytes, chunk_s: float = CHUNK_S) -> Iterator[bytes]:
    """A real-time client: a chunk every `chunk_s`, whatever the server does."""
    size = int(chunk_s * RATE) * 2
    began = time.monotonic()
    for n, start in enumerate(range(0, len(data), size)):
        time.sleep(max(0.0, began + n * chunk_s - time.monotonic()))
        yield data[start : start + size]


def test_a_stream_the_server_cannot_keep_up_with_shows_its_lag_and_late_finals_and_closes_the_door(
        slow: tuple[Any, SlowSteps]) -> None:
    served, engine = slow
    audio = as_bytes(pcm_of(PACKAGE / "samples" / "quickstart.wav"))
    cfg = config(interim=False, stop_history_ms=500)

    def run() -> float:
        """Stream the sample at real time; the seconds from its last chunk sent to its last result."""
        sent = []

        def chunks() -> Iterator[bytes]:
            yield from paced(audio + bytes(int(RATE * 2) * 2))  # two seconds of silence end the utterance
            sent.append(time.monotonic())

        responses = list(served.asr().streaming_response_generator(chunks(), cfg))
        assert any(r.is_final for response in responses for r in response.results)
        return time.monotonic() - sent[0]

    before = Scrape(served.metrics_url)
    run()
    kept_up = Scrape(served.metrics_url)
    engine.delay_s = 0.6  # each 320 ms step now takes twice its audio: the stream falls further behind each step
    behind_thread = threading.Thread(target=run)
    behind_thread.start()
    time.sleep(8.0)  # most steps of the last 10 s are behind
    refused = rpc_code(lambda: list(served.asr().streaming_response_generator(iter([bytes(3200)]), cfg)))
    behind_thread.join(120)
    after = Scrape(served.metrics_url)

    def mean(name: str, first: Scrape, last: Scrape) -> float:
        count = last.value(f"{name}_count") - first.value(f"{name}_count")
        return (last.value(f"{name}_sum") - first.value(f"{name}_sum")) / count

    assert mean("parakeet_stream_lag_seconds", before, kept_up) < 0.5
    assert mean("parakeet_stream_lag_seconds", kept_up, after) > 1.0
    # The final came long after a real-time speaker stopped: the metric says so (counted from the reads,
    # it stayed under a second).
    assert mean("parakeet_final_latency_seconds", kept_up, after) > 2.0
    assert refused == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert after.value("parakeet_admission_rejections_total", reason="streams_behind") == 1
