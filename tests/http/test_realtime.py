"""`/v1/realtime` transcription over a real WebSocket (the `websockets` client), in both of OpenAI's
dialects, against a live server on the demo model."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import riva.client
import soundfile as sf
import soxr
from riva.client.proto import riva_asr_pb2
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from parakeet_serve.engine import NemoEngine
from parakeet_serve.evaluation import corpus_wer, error_counts
from parakeet_serve.warmup import sample_path
from tests.conftest import MISHEARD, LoopThread, Served, start_server
from tests.http.test_transcriptions import client as http_client
from tests.riva.test_admission import poll
from tests.riva.test_streaming import as_bytes
from tests.telemetry.scrape import Scrape
from tests.test_cli import free_port

SAMPLES = [sample_path(), sample_path().with_name("held-out-voice.wav")]
TEXTS = [p.with_suffix(".txt").read_text().strip() for p in SAMPLES]


@pytest.fixture(scope="module")
def demo(loop_thread: LoopThread, demo_engine: NemoEngine) -> Iterator[Served]:
    served = start_server(loop_thread, demo_engine, model_id="demo", http_port=free_port(), max_streams=4)
    yield served
    served.stop()


def speech(rate: int, pause_s: float = 1.5) -> np.ndarray:
    """Both samples with a pause after each, at `rate`."""
    parts = []
    for path in SAMPLES:
        audio, source_rate = sf.read(path, dtype="float32")
        parts += [soxr.resample(audio, source_rate, rate), np.zeros(int(pause_s * rate), np.float32)]
    return np.concatenate(parts)


def g711(audio: np.ndarray, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, 8000, format="RAW", subtype=subtype)
    return buffer.getvalue()


def grpc_finals(served: Served, audio: np.ndarray, stop_history_ms: int) -> list[str]:
    """What Riva streaming gives for the same audio (16 kHz), for comparison."""
    data = as_bytes(audio)
    config = riva.client.StreamingRecognitionConfig(config=riva.client.RecognitionConfig(
        encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000, language_code="en-US",
        enable_automatic_punctuation=True, endpointing_config=riva_asr_pb2.EndpointingConfig(
            stop_history=stop_history_ms)), interim_results=False)
    chunks = (data[i:i + 3200] for i in range(0, len(data), 3200))
    return [r.alternatives[0].transcript for response in served.asr().streaming_response_generator(chunks, config)
            for r in response.results if r.is_final and r.alternatives[0].transcript]


class Socket:
    """A realtime connection: send events, read events until one of a type arrives."""

    def __init__(self, served: Served, token: str | None = None, **options: Any) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._ws = connect(f"ws://127.0.0.1:{served.app.http.port}/v1/realtime?intent=transcription",
                           additional_headers=headers, open_timeout=10, **options)
        self.received: list[dict[str, Any]] = []

    def send(self, **event: Any) -> None:
        self._ws.send(json.dumps(event))

    def append(self, data: bytes, chunk: int) -> None:
        for i in range(0, len(data), chunk):
            self.send(type="input_audio_buffer.append", audio=base64.b64encode(data[i:i + chunk]).decode())

    def until(self, kind: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        """Read until `count` events of `kind` have arrived since the socket opened."""
        while sum(e["type"] == kind for e in self.received) < count:
            self.received.append(json.loads(self._ws.recv(timeout=timeout)))
        return [e for e in self.received if e["type"] == kind]

    def close(self) -> None:
        self._ws.close()


def long_speech(repeats: int, rate: int) -> np.ndarray:
    """`speech` over and over: two utterances each time."""
    return np.tile(speech(rate), repeats)


def test_server_vad_gives_one_completed_transcript_per_utterance_with_deltas_before(demo: Served) -> None:
    ws = Socket(demo)
    try:
        assert ws.until("session.created")[0]["session"]["type"] == "transcription"
        ws.send(type="session.update", session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 600}}}})
        updated = ws.until("session.updated")[0]["session"]["audio"]["input"]
        assert updated["turn_detection"]["silence_duration_ms"] == 600
        ws.append(as_bytes(speech(24000)), chunk=4800)  # 100 ms per event, faster than real time
        completed = ws.until("conversation.item.input_audio_transcription.completed", 2)
    finally:
        ws.close()
    # as good as gRPC streaming of the same audio (both end utterances by the same endpointing)
    for event, text in zip(completed, grpc_finals(demo, speech(16000), 600), strict=True):
        assert error_counts(text, event["transcript"])[0] <= 1, (event["transcript"], text)
    assert error_counts(TEXTS[0], completed[0]["transcript"])[0] <= 1
    order = [e["type"] for e in ws.received if e.get("item_id") == completed[0]["item_id"]]
    assert order[0] == "input_audio_buffer.speech_started"
    assert "conversation.item.input_audio_transcription.delta" in order
    assert order.index("conversation.item.input_audio_transcription.delta") < order.index(
        "conversation.item.input_audio_transcription.completed")
    deltas = "".join(e["delta"] for e in ws.received if e["type"].endswith(".delta")
                     and e["item_id"] == completed[0]["item_id"])
    assert completed[0]["transcript"].startswith(deltas[: len(deltas) // 2])
    added = [e for e in ws.received if e["type"] == "conversation.item.added"]
    assert [a["item"]["id"] for a in added] == [c["item_id"] for c in completed]


@pytest.mark.parametrize(("fmt", "subtype"), [("g711_ulaw", "ULAW"), ("g711_alaw", "ALAW")])
def test_the_earlier_dialect_with_g711_and_manual_commit(demo: Served, fmt: str, subtype: str) -> None:
    ws = Socket(demo)
    try:
        ws.send(type="transcription_session.update", session={"input_audio_format": fmt, "turn_detection": None})
        session = ws.until("transcription_session.updated")[0]["session"]
        assert session["input_audio_format"] == fmt and session["turn_detection"] is None
        audio, rate = sf.read(SAMPLES[0], dtype="float32")
        ws.append(g711(soxr.resample(audio, rate, 8000), subtype), chunk=800)
        ws.send(type="input_audio_buffer.commit")
        (completed,) = ws.until("conversation.item.input_audio_transcription.completed")
        assert ws.until("conversation.item.created")
    finally:
        ws.close()
    assert error_counts(TEXTS[0], completed["transcript"])[0] <= 1, completed["transcript"]


def test_bad_events_get_error_events_and_the_socket_stays_usable(demo: Served,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="parakeet_serve.http.realtime")
    ws = Socket(demo)
    try:
        ws._ws.send("{not json")
        ws.send(type="input_audio_buffer.append", audio="***not base64***", event_id="evt_7")
        ws.send(type="response.create")
        ws.send(type="input_audio_buffer.commit")  # nothing to commit yet
        ws.send(type="session.update", session={"audio": {"input": {"format": {"type": "audio/flac"}}}})
        ws._ws.send(b"\x00\x01")
        errors = ws.until("error", 6)
        assert [e["error"]["code"] for e in errors] == ["invalid_json", "invalid_audio", "unknown_event",
                                                        "input_audio_buffer_commit_empty", "invalid_format",
                                                        "invalid_json"]
        assert errors[1]["error"]["event_id"] == "evt_7"
        ws.send(type="session.update", session={"audio": {"input": {"turn_detection": None}}})
        ws.until("session.updated")
        audio, rate = sf.read(SAMPLES[1], dtype="float32")
        ws.append(as_bytes(soxr.resample(audio, rate, 24000)), chunk=4800)
        ws.send(type="input_audio_buffer.commit")
        (completed,) = ws.until("conversation.item.input_audio_transcription.completed")
    finally:
        ws.close()
    assert error_counts(TEXTS[1], completed["transcript"])[0] <= 1
    # the session's one log line, as each gRPC call and HTTP request has
    poll(lambda: any(r.getMessage() == "realtime session finished" for r in caplog.records))
    (line,) = [r for r in caplog.records if r.getMessage() == "realtime session finished"]
    assert (line.outcome, line.utterances, line.errors) == ("closed", 1, 6)
    assert abs(line.audio_s - len(audio) / rate) < 0.01 and len(line.session_id) == 16


@pytest.mark.parametrize(("sent", "code", "param"), [
    ("[1, 2, 3]", "invalid_json", None),
    ("42", "invalid_json", None),
    ("null", "invalid_json", None),
    ('{"type": ["session.update"]}', "invalid_json", None),
    ("[" * 100_000, "invalid_json", None),  # deeper than the parser goes
    ('{"type": "input_audio_buffer.append", "audio": 12345}', "invalid_value", "audio"),
    ('{"type": "session.update", "session": "transcription"}', "invalid_value", "session"),
    ('{"type": "session.update", "session": {"audio": {"input": {"format": 7}}}}', "invalid_value",
     "session.audio.input.format"),
    ('{"type": "transcription_session.update", "session": {"turn_detection": {"silence_duration_ms": "abc"}}}',
     "invalid_value", "session.turn_detection.silence_duration_ms"),
], ids=["list", "number", "null", "typed-type", "deep", "audio-number", "session-string", "format-number",
        "silence-string"])
def test_a_malformed_event_gets_an_error_naming_the_field_and_the_socket_stays_usable(
        demo: Served, sent: str, code: str, param: str | None) -> None:
    ws = Socket(demo)
    try:
        ws._ws.send(sent)
        (error,) = ws.until("error")
        ws.send(type="session.update", session={"audio": {"input": {"turn_detection": None}}})
        ws.until("session.updated")  # still usable
    finally:
        ws.close()
    assert (error["error"]["code"], error["error"]["param"]) == (code, param), error
    assert len(error["error"]["message"]) < 200


def test_a_commit_always_gets_an_answer_an_error_under_100_ms_and_an_empty_item_for_silence(demo: Served) -> None:
    """As OpenAI's API: a client waiting for `committed` is never left hanging."""
    ws = Socket(demo)
    try:
        ws.send(type="session.update", session={"audio": {"input": {"turn_detection": None}}})
        ws.until("session.updated")
        ws.append(b"\x00\x00" * 24, chunk=48)  # 1 ms at 24 kHz
        ws.send(type="input_audio_buffer.commit", event_id="evt_1")
        (refused,) = ws.until("error")
        ws.append(b"\x00\x00" * 12000, chunk=4800)  # then 0.5 s of silence
        ws.send(type="input_audio_buffer.commit")
        (committed,) = ws.until("input_audio_buffer.committed")
        (completed,) = ws.until("conversation.item.input_audio_transcription.completed")
    finally:
        ws.close()
    assert refused["error"]["code"] == "input_audio_buffer_commit_empty" and refused["error"]["event_id"] == "evt_1"
    assert "holds 1 ms of audio; a commit needs at least 100 ms" in refused["error"]["message"]
    assert completed["item_id"] == committed["item_id"] and completed["transcript"] == ""


def test_a_socket_past_the_stream_limit_is_told_it_is_a_rate_limit(demo: Served) -> None:
    poll(lambda: demo.app._scheduler.active_streams == 0)  # earlier tests' streams have ended
    sockets = [Socket(demo) for _ in range(5)]  # the server takes 4 streams
    try:
        for held, ws in enumerate(sockets, start=1):
            ws.append(b"\x00\x00" * 2400, chunk=4800)
            if held < len(sockets):  # the sockets' events race each other: the fifth must come last
                poll(lambda held=held: demo.app._scheduler.active_streams == held)
        (refused,) = [e for ws in sockets[-1:] for e in ws.until("error")]
    finally:
        for ws in sockets:
            ws.close()
    assert refused["error"]["type"] == "rate_limit_error" and "stream" in refused["error"]["message"]


def test_a_socket_that_stops_sending_has_its_stream_ended_and_keeps_the_socket(loop_thread: LoopThread,
                                                                                demo_engine: NemoEngine) -> None:
    served = start_server(loop_thread, demo_engine, model_id="demo", http_port=free_port(), max_streams=1,
                          stream_idle_timeout_s=0.5)
    try:
        ws = Socket(served)
        try:
            ws.append(b"\x00\x00" * 2400, chunk=4800)
            poll(lambda: served.app._scheduler.active_streams == 1)
            (idle,) = ws.until("error")  # then nothing for longer than the timeout
            poll(lambda: served.app._scheduler.active_streams == 0)
            ws.send(type="session.update", session={"audio": {"input": {"turn_detection": None}}})
            ws.until("session.updated")  # the socket is still usable
        finally:
            ws.close()
    finally:
        served.stop()
    assert idle["error"]["code"] == "idle_timeout" and idle["error"]["type"] == "timeout_error"
    assert "Nothing arrived on the stream for 0.5 s" in idle["error"]["message"]


def test_a_token_is_required_when_configured(loop_thread: LoopThread, engine: NemoEngine) -> None:
    served = start_server(loop_thread, engine, http_port=free_port(), auth_token="s3cret")
    try:
        refused = Socket(served)
        (error,) = refused.until("error")
        assert error["error"]["type"] == "authentication_error"
        refused.close()
        accepted = Socket(served, token="s3cret")
        assert accepted.until("session.created")
        accepted.close()
    finally:
        served.stop()


def test_a_socket_is_one_stream_for_admission_control_shared_with_grpc(loop_thread: LoopThread,
                                                                      demo_engine: NemoEngine) -> None:
    served = start_server(loop_thread, demo_engine, model_id="demo", http_port=free_port(), max_streams=1)
    ws = Socket(served)
    try:
        ws.append(as_bytes(np.zeros(4800, np.float32)), chunk=9600)  # audio opens the socket's stream
        ws.send(type="ping")  # events are handled in order: its error means the stream is open
        ws.until("error")
        with pytest.raises(Exception) as refused:
            grpc_finals(served, np.zeros(16000, np.float32), 600)
        assert "RESOURCE_EXHAUSTED" in str(refused.value)
        ws.close()
        poll(lambda: Scrape(served.metrics_url).value("parakeet_active_streams") == 0)  # the socket's is released
        assert grpc_finals(served, np.zeros(16000, np.float32), 600) == []
    finally:
        ws.close()
        served.stop()


def test_the_transcription_prompt_boosts_its_phrases(demo: Served) -> None:
    clip, rate = sf.read(MISHEARD.clip, dtype="float32")
    ws = Socket(demo)
    try:
        ws.send(type="session.update", session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"prompt": MISHEARD.said},
            "turn_detection": None}}})
        assert ws.until("session.updated")[0]["session"]["audio"]["input"]["transcription"]["prompt"] == MISHEARD.said
        ws.append(as_bytes(soxr.resample(clip, rate, 24000)), chunk=4800)
        ws.send(type="input_audio_buffer.commit")
        (completed,) = ws.until("conversation.item.input_audio_transcription.completed")
    finally:
        ws.close()
    assert MISHEARD.which(completed["transcript"]) == MISHEARD.said  # unboosted, the model says MISHEARD.heard


def test_a_large_append_is_transcribed_in_steps_that_other_clients_work_runs_between(demo: Served) -> None:
    """Minutes of audio in one append hold the model a step at a time: a transcription asked for once the
    append's first item is done is answered while most of the append is still to come."""
    repeats = 5
    ws = Socket(demo)
    arrivals: list[tuple[float, str]] = []  # when each event came, read as it comes

    def listen() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                arrivals.append((time.monotonic(), json.loads(ws._ws.recv())["type"]))

    try:
        ws.append(as_bytes(long_speech(repeats, 24000)), chunk=10**9)  # about a minute in one event
        listener = threading.Thread(target=listen)
        listener.start()
        poll(lambda: any(kind.endswith("transcription.completed") for _, kind in arrivals), timeout=120)
        with SAMPLES[1].open("rb") as audio:
            text = http_client(demo).audio.transcriptions.create(model="demo", file=audio, response_format="text")
        answered = time.monotonic()
        poll(lambda: sum(kind.endswith("transcription.completed") for _, kind in arrivals) == 2 * repeats, 120)
    finally:
        ws.close()
    listener.join()
    assert error_counts(TEXTS[1], text)[0] <= 1
    before = [t for t, kind in arrivals if kind.endswith("transcription.completed") and t < answered]
    assert len(before) < repeats, f"the transcription waited for {len(before)} of the append's {2 * repeats} items"


def test_the_socket_is_read_and_its_pings_answered_while_a_backlog_is_transcribed(demo: Served) -> None:
    repeats = 4
    ws = Socket(demo, ping_interval=0.2, ping_timeout=1.0)  # the client closes a socket whose pongs stop
    try:
        ws.append(as_bytes(long_speech(repeats, 24000)), chunk=12000)  # 250 ms each, far faster than real time
        ws.send(type="input_audio_buffer.commit")
        completed = ws.until("conversation.item.input_audio_transcription.completed", 2 * repeats, timeout=120)
    finally:
        ws.close()
    wer = corpus_wer(TEXTS * repeats, [e["transcript"] for e in completed])
    assert wer <= 0.1, [e["transcript"] for e in completed]  # no audio lost or repeated


def test_an_append_past_the_buffer_limit_is_refused_and_the_socket_stays_usable(loop_thread: LoopThread,
                                                                                 demo_engine: NemoEngine) -> None:
    served = start_server(loop_thread, demo_engine, model_id="demo", http_port=free_port(),
                          realtime_max_buffer_mib=0.5)  # 10.9 s of 24 kHz PCM
    audio, rate = sf.read(SAMPLES[1], dtype="float32")
    try:
        ws = Socket(served)
        try:
            ws.send(type="session.update", session={"audio": {"input": {"turn_detection": None}}})
            ws.until("session.updated")
            ws.send(type="input_audio_buffer.append", event_id="evt_big",
                    audio=base64.b64encode(as_bytes(speech(24000, pause_s=6.0))).decode())
            (refused,) = ws.until("error")
            ws.append(as_bytes(soxr.resample(audio, rate, 24000)), chunk=10**9)  # under the limit: taken
            ws.send(type="input_audio_buffer.commit")
            (completed,) = ws.until("conversation.item.input_audio_transcription.completed")
        finally:
            ws.close()
    finally:
        served.stop()
    assert refused["error"]["code"] == "input_audio_buffer_full" and refused["error"]["event_id"] == "evt_big"
    assert "past its 0.5 MiB of audio not yet transcribed" in refused["error"]["message"]
    assert error_counts(TEXTS[1], completed["transcript"])[0] <= 1
