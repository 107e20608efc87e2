"""A model that fails inside the server: every front end answers with its own status and one sentence (never the
engine's words), each request's failure is logged and counted, and the server goes on serving."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
import riva.client
from websockets.sync.client import connect
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient

from parakeet_serve.engine import NemoEngine
from parakeet_serve.errors import INTERNAL_FAILURE
from tests.conftest import SAMPLE_RATE, LoopThread, Served, pcm16, speechlike, start_server
from tests.riva.test_bad_input import WAV
from tests.telemetry.scrape import Scrape
from tests.test_cli import free_port

CAUSE = "CUDA error: an illegal memory access was encountered"


class BrokenStreamer:
    def __init__(self, streamer: Any) -> None:
        self._streamer = streamer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._streamer, name)

    def step(self, items: Any) -> Any:
        raise RuntimeError(CAUSE)


class BrokenEngine:
    """The real engine, whose every batch and stream step raises as a crashed GPU would."""

    def __init__(self, engine: NemoEngine) -> None:
        self._engine = engine
        self.info, self.sample_rate = engine.info, engine.sample_rate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def warmup(self, shape: object = None) -> None:
        pass

    def recognise(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(CAUSE)

    def streamer(self, context_s: float) -> BrokenStreamer:
        return BrokenStreamer(self._engine.streamer(context_s))


@pytest.fixture
def broken(loop_thread: LoopThread, engine: NemoEngine) -> Iterator[Served]:
    served = start_server(loop_thread, BrokenEngine(engine), http_port=free_port(), wyoming_port=free_port())
    yield served
    served.stop()


AUDIO = pcm16(speechlike(1.0))


def test_grpc_calls_end_internal_with_one_sentence(broken: Served, caplog: pytest.LogCaptureFixture) -> None:
    config = riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM,
                                           sample_rate_hertz=SAMPLE_RATE, language_code="en-US")
    with caplog.at_level(logging.INFO):
        with pytest.raises(grpc.RpcError) as offline:
            broken.asr().offline_recognize(AUDIO, config)
        stream = riva.client.StreamingRecognitionConfig(config=config, interim_results=True)
        with pytest.raises(grpc.RpcError) as streamed:
            chunks = iter([AUDIO[i:i + 3200] for i in range(0, len(AUDIO), 3200)])
            list(broken.asr().streaming_response_generator(chunks, stream))
    for failed in (offline.value, streamed.value):
        assert (failed.code(), failed.details()) == (grpc.StatusCode.INTERNAL, INTERNAL_FAILURE)
    assert_logged_once_a_batch_with_its_cause(caplog)
    scrape = Scrape(broken.metrics_url)
    assert scrape.value("parakeet_requests_total", rpc="Recognize", code="INTERNAL") == 1
    assert scrape.value("parakeet_requests_total", rpc="StreamingRecognize", code="INTERNAL") == 1
    assert broken.asr().stub.GetRivaSpeechRecognitionConfig(  # still serving
        riva.client.proto.riva_asr_pb2.RivaSpeechRecognitionConfigRequest()).model_config


def test_http_answers_500_in_openai_s_envelope_and_logs_the_request(broken: Served,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        response = httpx.post(f"http://127.0.0.1:{broken.app.http.port}/v1/audio/transcriptions",
                              files={"file": ("a.wav", WAV)}, data={"model": broken.settings.served_model_name},
                              timeout=60)
    assert response.status_code == 500
    assert response.json() == {"error": {"message": INTERNAL_FAILURE, "type": "server_error", "param": None,
                                         "code": None}}
    finished = [r for r in caplog.records if r.getMessage() == "request finished" and getattr(r, "status", 0) == 500]
    assert len(finished) == 1
    assert_logged_once_a_batch_with_its_cause(caplog)


def test_the_realtime_socket_gets_an_error_event_and_stays_open(broken: Served) -> None:
    url = f"ws://127.0.0.1:{broken.app.http.port}/v1/realtime?intent=transcription"
    with connect(url, open_timeout=10) as socket:
        assert json.loads(socket.recv(10))["type"] == "session.created"
        pcm24k = pcm16(speechlike(1.0, rate=24000))
        socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm24k).decode()}))
        error = json.loads(socket.recv(30))
        assert error["type"] == "error" and error["error"]["type"] == "server_error"
        assert error["error"]["message"] == INTERNAL_FAILURE
        socket.send(json.dumps({"type": "input_audio_buffer.clear"}))
        assert json.loads(socket.recv(10))["type"] == "input_audio_buffer.cleared"


def test_a_wyoming_utterance_gets_an_internal_error_event(broken: Served, loop_thread: LoopThread) -> None:
    async def speak() -> dict[str, Any]:
        async with AsyncTcpClient("127.0.0.1", broken.app.wyoming.port) as client:
            for event in (AudioStart(rate=SAMPLE_RATE, width=2, channels=1),
                          AudioChunk(rate=SAMPLE_RATE, width=2, channels=1, audio=AUDIO), AudioStop()):
                await client.write_event(event.event())
            event = await asyncio.wait_for(client.read_event(), 60)
            return {"type": event.type, **event.data}

    assert loop_thread.run(speak()) == {"type": "error", "text": INTERNAL_FAILURE, "code": "internal"}
    assert Scrape(broken.metrics_url).value("parakeet_requests_total", rpc="Wyoming", code="INTERNAL") == 1


def assert_logged_once_a_batch_with_its_cause(caplog: pytest.LogCaptureFixture) -> None:
    batches = [r for r in caplog.records if r.getMessage() == "inference batch failed"]
    assert batches and all(r.exc_info and CAUSE in str(r.exc_info[1]) for r in batches)
    assert not any(CAUSE in r.getMessage() for r in caplog.records)
