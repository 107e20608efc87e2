"""Admission control seen by a Riva client: queue full, queue TTL, client deadlines."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import grpc
import numpy as np
import pytest
import riva.client
from riva.client.proto import riva_asr_pb2

from parakeet_serve.engine import NemoEngine
from parakeet_serve.engine.types import Recognition
from parakeet_serve.riva.status import RETRY_PUSHBACK_KEY
from tests.conftest import LoopThread, Served, start_server
from tests.riva.test_bad_input import WAV
from tests.telemetry.scrape import Scrape


class HeldEngine:
    """The real engine behind a gate, so a test decides when the worker is busy."""

    def __init__(self, engine: NemoEngine) -> None:
        self._engine = engine
        self.info, self.sample_rate = engine.info, engine.sample_rate
        self.gate = threading.Event()
        self.entered = 0
        self.batches: list[int] = []

    def warmup(self, shape: object = None) -> None:
        pass

    def __getattr__(self, name: str) -> object:  # streaming and the rest go straight to the real engine
        return getattr(self._engine, name)

    def recognise(self, audios: Sequence[np.ndarray], alternatives: Sequence[int] | None = None,
                  boosts: Sequence[object] | None = None) -> list[Recognition]:
        self.entered += 1
        self.gate.wait(60)
        self.batches.append(len(audios))
        return self._engine.recognise(audios, alternatives, boosts)


CONFIG = riva.client.RecognitionConfig(language_code="en-US")


def poll(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def assert_abandoned_work_never_reached_the_model(served: Served, held: HeldEngine, first: object) -> None:
    """Once the held work is let go, it and a new request are answered, and nothing else reached the model."""
    held.gate.set()
    assert first.result(60).results
    assert served.asr().offline_recognize(WAV, CONFIG).results
    assert held.batches == [1, 1]


@pytest.fixture
def held(engine: NemoEngine) -> HeldEngine:
    return HeldEngine(engine)


def busy_server(loop_thread: LoopThread, held: HeldEngine, **overrides) -> tuple[Served, object]:
    """A server whose single worker is busy with one request and whose queue holds one more."""
    served = start_server(
        loop_thread, held, microbatch_max_batch=1, queue_max_factor=1, microbatch_window_ms=0, **overrides
    )
    first = served.asr().offline_recognize(WAV, CONFIG, future=True)
    poll(lambda: held.entered == 1)
    return served, first


def test_full_queue_is_resource_exhausted_with_pushback(loop_thread: LoopThread, held: HeldEngine) -> None:
    served, first = busy_server(loop_thread, held)
    try:
        second = served.asr().offline_recognize(WAV, CONFIG, future=True)
        poll(lambda: served.app.queue_depth == 1)
        with pytest.raises(grpc.RpcError) as info:
            served.asr().offline_recognize(WAV, CONFIG)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry" in info.value.details()
        assert int(dict(info.value.trailing_metadata())[RETRY_PUSHBACK_KEY]) > 0
        assert Scrape(served.metrics_url).value("parakeet_admission_rejections_total", reason="queue_full") == 1
        held.gate.set()
        assert first.result(60).results and second.result(60).results
    finally:
        held.gate.set()
        served.stop()


def test_work_older_than_the_queue_ttl_is_dropped(loop_thread: LoopThread, held: HeldEngine) -> None:
    served, first = busy_server(loop_thread, held, max_queue_wait_s=0.05)
    try:
        stale = served.asr().offline_recognize(WAV, CONFIG, future=True)
        poll(lambda: served.app.queue_depth == 1)
        time.sleep(0.1)  # past the TTL, on purpose
        held.gate.set()
        assert first.result(60).results
        with pytest.raises(grpc.RpcError) as info:
            stale.result(60)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert held.batches == [1]
        assert Scrape(served.metrics_url).value("parakeet_admission_rejections_total", reason="queue_timeout") == 1
    finally:
        held.gate.set()
        served.stop()


def test_client_deadline_frees_the_slot_before_compute(loop_thread: LoopThread, held: HeldEngine) -> None:
    served, first = busy_server(loop_thread, held)
    try:
        stub = served.asr().stub
        with pytest.raises(grpc.RpcError) as info:
            stub.Recognize(riva_asr_pb2.RecognizeRequest(config=CONFIG, audio=WAV), timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert_abandoned_work_never_reached_the_model(served, held, first)
    finally:
        held.gate.set()
        served.stop()
