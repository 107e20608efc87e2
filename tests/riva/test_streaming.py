"""StreamingRecognize through the real Riva client, on the demo model, on a loopback server."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import grpc
import numpy as np
import pytest
import riva.client
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc, riva_common_pb2

from parakeet_serve.audio import AudioFormat, decode_audio
from parakeet_serve.engine import NemoEngine
from parakeet_serve.engine.streaming import StreamState
from parakeet_serve.evaluation import error_counts, read_manifest
from tests.conftest import LoopThread, Served, start_server
from tests.riva.test_admission import poll

PACKAGE = Path(str(resources.files("parakeet_serve")))
SAMPLE = PACKAGE / "samples" / "quickstart.wav"
EVAL = read_manifest(PACKAGE / "eval" / "demo-eval-seen-voices.jsonl")
RATE = 16000


@pytest.fixture(scope="module")
def demo(loop_thread: LoopThread, demo_engine: NemoEngine) -> Iterator[Served]:
    served = start_server(loop_thread, demo_engine, model_id="demo", max_streams=32)
    yield served
    served.stop()


@dataclass(frozen=True)
class Result:
    final: bool
    text: str
    words: tuple[tuple[str, float, float], ...]
    audio_processed: float


def pcm_of(path: Path) -> np.ndarray:
    return decode_audio(path.read_bytes(), AudioFormat(), target_rate=RATE, max_seconds=600).mono()


def as_bytes(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def config(interim: bool = True, stop_history_ms: int = 0, **fields) -> riva.client.StreamingRecognitionConfig:
    fields = {"encoding": riva.client.AudioEncoding.LINEAR_PCM, "sample_rate_hertz": RATE, **fields}
    recognition = riva.client.RecognitionConfig(
        language_code="en-US", enable_word_time_offsets=True,
        endpointing_config=riva_asr_pb2.EndpointingConfig(stop_history=stop_history_ms), **fields,
    )
    return riva.client.StreamingRecognitionConfig(config=recognition, interim_results=interim)


def stream(served: Served, data: bytes, chunk_bytes: int, cfg=None) -> list[Result]:
    chunks = (data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes))
    out = []
    for response in served.asr().streaming_response_generator(audio_chunks=chunks, streaming_config=cfg or config()):
        for r in response.results:
            alt = r.alternatives[0]
            words = tuple((w.word, w.start_time / 1000, w.end_time / 1000) for w in alt.words)
            out.append(Result(r.is_final, alt.transcript, words, r.audio_processed))
    return out


def finals(results: list[Result]) -> list[str]:
    return [r.text for r in results if r.final]


def offline(served: Served, samples: np.ndarray) -> str:
    cfg = riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=RATE,
                                        language_code="en-US")
    response = served.asr().offline_recognize(as_bytes(samples), cfg)
    return " ".join(r.alternatives[0].transcript for r in response.results)


def test_chunk_sizes_give_the_same_finals_as_recognize(demo: Served) -> None:
    samples = pcm_of(SAMPLE)
    expected = offline(demo, samples)
    assert expected  # accuracy itself is tests/test_demo_model.py's business
    for chunk_ms in (10, 50, 1000):
        results = stream(demo, as_bytes(samples), chunk_bytes=chunk_ms * RATE // 1000 * 2)
        assert " ".join(finals(results)) == expected, f"{chunk_ms} ms chunks"


def test_a_model_trained_for_streaming_streams_in_one_pass_at_its_lookahead(demo: Served) -> None:
    model = demo.asr().stub.GetRivaSpeechRecognitionConfig(riva_asr_pb2.RivaSpeechRecognitionConfigRequest())
    parameters = model.model_config[0].parameters
    assert parameters["streaming_mode"] == "cache_aware"
    assert parameters["lookahead_ms"] == parameters["lookaheads_ms"] == "240"  # its one: 3 frames of 80 ms
    assert parameters["chunk_size"] == "0.32"


def test_interim_results_come_before_the_final_and_only_grow(demo: Served) -> None:
    results = stream(demo, as_bytes(pcm_of(SAMPLE)), chunk_bytes=3200)
    first_final = next(i for i, r in enumerate(results) if r.final)
    interims = [r for r in results[:first_final] if not r.final]
    assert len(interims) >= 3
    final_words = results[first_final].text.split()
    for r in interims:  # every interim word but the one still being spoken is already the final's
        words = r.text.split()
        assert words[:-1] == final_words[: len(words) - 1]
    processed = [r.audio_processed for r in results]
    assert processed == sorted(processed)


def test_a_wav_header_may_start_the_stream(demo: Served) -> None:
    expected = finals(stream(demo, as_bytes(pcm_of(SAMPLE)), chunk_bytes=3200))
    unspecified = config(encoding=riva.client.AudioEncoding.ENCODING_UNSPECIFIED, sample_rate_hertz=0)
    assert finals(stream(demo, SAMPLE.read_bytes(), chunk_bytes=4000, cfg=unspecified)) == expected


Spans = list[tuple[float, float]]


def utterances_with_pauses(entries, pause_s: float, lead_s: float = 0.0) -> tuple[np.ndarray, Spans]:
    parts, spans, t = [np.zeros(int(lead_s * RATE), np.float32)], [], lead_s
    for entry in entries:
        audio = pcm_of(entry.audio)
        parts += [audio, np.zeros(int(pause_s * RATE), np.float32)]
        spans.append((t, t + len(audio) / RATE))
        t += len(audio) / RATE + pause_s
    return np.concatenate(parts), spans


def test_each_utterance_of_a_stream_gets_one_final_as_accurate_as_recognize(demo: Served) -> None:
    # Each utterance reaches the model after a pause and on another chunk grid than alone, so a word
    # the model is unsure of may differ; lost or repeated ones may not.
    entries = EVAL[:12]
    audio, spans = utterances_with_pauses(entries, pause_s=1.0, lead_s=2.0)  # 2 s of keepalive zeros first
    got = [r for r in stream(demo, as_bytes(audio), chunk_bytes=1600) if r.final]
    assert len(got) == len(entries)
    for result, (start, end) in zip(got, spans, strict=True):  # in order: each inside its own utterance
        assert start - 0.3 <= result.words[0][1] and result.words[-1][2] <= end + 0.4
    streamed = sum(error_counts(e.text, r.text)[0] for e, r in zip(entries, got, strict=True))
    alone = sum(error_counts(e.text, offline(demo, pcm_of(e.audio)))[0] for e in entries)
    words = sum(len(e.text.split()) for e in entries)
    assert streamed <= alone + 0.02 * words  # a word lost or repeated at a boundary would show here


def finals_together(served: Served, clips: list[bytes], timeout_s: float = 120) -> list[list[str] | None]:
    """Each clip's finals, all streamed at once (a barrier starts them together)."""
    together: list[list[str] | None] = [None] * len(clips)
    start = threading.Barrier(len(clips))

    def run(i: int) -> None:
        start.wait()
        together[i] = finals(stream(served, clips[i], chunk_bytes=3200))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    return together


def test_sixteen_concurrent_streams_give_the_finals_each_gives_alone(demo: Served) -> None:
    clips = [as_bytes(pcm_of(e.audio)) for e in EVAL[:16]]
    alone = [finals(stream(demo, clip, chunk_bytes=3200)) for clip in clips]
    assert finals_together(demo, clips) == alone


def live_streams() -> int:
    gc.collect()
    return sum(isinstance(o, StreamState) for o in gc.get_objects())


def test_clients_that_vanish_mid_stream_leave_nothing_behind(demo: Served) -> None:
    before = live_streams()
    stub = demo.asr().stub
    chunk = as_bytes(pcm_of(SAMPLE))[:6400]
    for _ in range(100):
        answered = threading.Event()

        def requests(answered: threading.Event = answered) -> Iterator[riva_asr_pb2.StreamingRecognizeRequest]:
            yield riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config())
            for _ in range(5):
                yield riva_asr_pb2.StreamingRecognizeRequest(audio_content=chunk)
            answered.wait(10)  # the client never half-closes: it vanishes

        call = stub.StreamingRecognize(requests())
        poll(lambda: demo.app._scheduler.active_streams == 1)  # the stream is live on the server
        call.cancel()
        answered.set()
    # One state may outlive its stream for a while: the last batch's inputs stay referenced until the
    # inference worker runs its next batch. A leak would leave a hundred.
    poll(lambda: demo.app._scheduler.active_streams == 0 and live_streams() <= before + 1)
    assert finals(stream(demo, as_bytes(pcm_of(SAMPLE)), chunk_bytes=3200))  # and it still serves


def test_a_stream_that_stops_sending_is_ended_and_frees_its_slot(loop_thread: LoopThread,
                                                                  demo_engine: NemoEngine) -> None:
    served = start_server(loop_thread, demo_engine, model_id="demo", max_streams=1, stream_idle_timeout_s=0.5)
    try:
        chunk = as_bytes(pcm_of(SAMPLE))[:6400]
        gone = threading.Event()

        def stalled() -> Iterator[riva_asr_pb2.StreamingRecognizeRequest]:
            yield riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config())
            yield riva_asr_pb2.StreamingRecognizeRequest(audio_content=chunk)
            gone.wait(30)  # then nothing, and no half-close: a client that hung

        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as ended:
            list(served.asr().stub.StreamingRecognize(stalled()))
        gone.set()
        assert ended.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "Nothing arrived on the stream for 0.5 s" in ended.value.details()
        assert time.monotonic() - started < 10
        poll(lambda: served.app._scheduler.active_streams == 0)
        assert finals(stream(served, as_bytes(pcm_of(SAMPLE)), chunk_bytes=3200))  # its one slot is free again
    finally:
        served.stop()


# 20 minutes keeps CI within its time on 2 cores (each 320 ms chunk is one encoder call); memory is
# compared between the 10th minute and the end, so growth per minute would show.
STREAM_SECONDS = 1200


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_long_stream_sent_fast_keeps_memory_flat(demo: Served) -> None:
    block, _ = utterances_with_pauses(EVAL[:20], pause_s=1.0)  # about a minute of speech and pauses
    blocks = int(STREAM_SECONDS / (len(block) / RATE)) + 1
    memory: list[float] = []
    final_count = 0

    def chunks() -> Iterator[bytes]:
        data = as_bytes(block)
        for k in range(blocks):
            if k in (10, blocks - 1):
                memory.append(rss_mb())
            for i in range(0, len(data), 32000):
                yield data[i : i + 32000]

    cfg = config(interim=False)
    for response in demo.asr().streaming_response_generator(audio_chunks=chunks(), streaming_config=cfg):
        final_count += sum(r.is_final for r in response.results)
        last = response.results[-1].audio_processed if response.results else 0
    assert last >= STREAM_SECONDS
    assert final_count >= 0.9 * 20 * blocks
    assert memory[1] - memory[0] < 30, f"RSS grew from {memory[0]:.0f} MB to {memory[1]:.0f} MB"


def test_streams_beyond_the_maximum_are_refused_and_admitted_ones_go_on(
    loop_thread: LoopThread, demo_engine: NemoEngine
) -> None:
    served = start_server(loop_thread, demo_engine, model_id="demo", max_streams=2)
    release = threading.Event()
    audio = as_bytes(pcm_of(SAMPLE))
    try:
        def held() -> Iterator[bytes]:
            yield audio[:32000]
            release.wait(30)
            yield audio[32000:]

        held_results: list[list[Result]] = []
        threads = [threading.Thread(target=lambda: held_results.append(_stream_chunks(served, held())))
                   for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while served.app._scheduler.active_streams < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(grpc.RpcError) as info:
            stream(served, audio, 3200)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "maximum of 2 streams" in info.value.details()
        release.set()
        for t in threads:
            t.join(60)
        assert all(finals(r) for r in held_results) and len(held_results) == 2
        assert finals(stream(served, audio, 3200))
    finally:
        release.set()
        served.stop()


def test_an_admitted_stream_gets_headers_with_its_request_id_before_it_sends_audio(demo: Served) -> None:
    """Headers the moment a stream is admitted let a client wait for them before writing audio: an asyncio
    client whose write is in flight when a refusal arrives reports INTERNAL instead (grpc#36066)."""
    audio, admitted = as_bytes(pcm_of(SAMPLE)), threading.Event()

    def requests() -> Iterator[riva_asr_pb2.StreamingRecognizeRequest]:
        yield riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config(interim=False),
                                                     id=riva_common_pb2.RequestId(value="call-7"))
        if admitted.wait(10):
            yield from (riva_asr_pb2.StreamingRecognizeRequest(audio_content=audio[i : i + 3200])
                        for i in range(0, len(audio), 3200))

    with grpc.insecure_channel(demo.address) as channel:
        call = riva_asr_pb2_grpc.RivaSpeechRecognitionStub(channel).StreamingRecognize(requests(), timeout=60)
        headers = dict(call.initial_metadata())
        admitted.set()
        said = [r.alternatives[0].transcript for response in call for r in response.results if r.is_final]
    assert headers.get("x-parakeet-request-id") == "call-7"
    assert " ".join(said) == offline(demo, pcm_of(SAMPLE))


def _stream_chunks(served: Served, chunks: Iterator[bytes]) -> list[Result]:
    out = []
    for response in served.asr().streaming_response_generator(audio_chunks=chunks, streaming_config=config()):
        out += [Result(r.is_final, r.alternatives[0].transcript, (), r.audio_processed) for r in response.results]
    return out


def test_drain_gives_every_live_stream_its_final(loop_thread: LoopThread, demo_engine: NemoEngine) -> None:
    served = start_server(loop_thread, demo_engine, model_id="demo", shutdown_grace_s=3.0)
    speech = as_bytes(pcm_of(SAMPLE))
    results: list[list[Result]] = [[] for _ in range(4)]

    def live(i: int) -> None:
        def chunks() -> Iterator[bytes]:
            for k in range(0, len(speech), 3200):
                yield speech[k : k + 3200]
                time.sleep(0.01)
            while True:  # then the client stays on the line, sending keepalive silence
                yield b"\0" * 3200
                time.sleep(0.1)

        results[i] = _stream_chunks(served, chunks())

    threads = [threading.Thread(target=live, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    draining = loop_thread.submit(served.app.drain())
    time.sleep(0.3)
    with pytest.raises(grpc.RpcError) as info:
        stream(served, speech, 3200)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    for t in threads:
        t.join(30)
    draining.result(30)
    assert all(r and r[-1].final for r in results)  # every live stream got its final
    assert len({" ".join(finals(r)) for r in results} - {""}) == 1  # the same words for the same audio


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([riva_asr_pb2.StreamingRecognizeRequest(audio_content=b"\0" * 320)], "must carry streaming_config"),
        ([riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config()),
          riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config())], "only come in the first message"),
        ([riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config(encoding=riva.client.AudioEncoding.FLAC))],
         "not FLAC"),
        ([riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config(sample_rate_hertz=0)),
          riva_asr_pb2.StreamingRecognizeRequest(audio_content=b"\0" * 320)], "needs sample_rate_hertz"),
        ([riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config(sample_rate_hertz=1000)),
          riva_asr_pb2.StreamingRecognizeRequest(audio_content=b"\0" * 320)], "outside 8000"),
        ([riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config(
            encoding=riva.client.AudioEncoding.ENCODING_UNSPECIFIED)),
          riva_asr_pb2.StreamingRecognizeRequest(audio_content=b"RIFF\0\0\0\0WAVEfmt " + b"\xff" * 40)],
         "WAV"),
        ([riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config(model="whisper"))], "is not served here"),
    ],
)
def test_bad_streams_get_invalid_argument_and_the_server_goes_on(demo: Served, requests, message: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(demo.asr().stub.StreamingRecognize(iter(requests)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    assert finals(stream(demo, as_bytes(pcm_of(SAMPLE)), chunk_bytes=16000))



def test_minutes_of_audio_in_one_message_hold_the_model_a_step_at_a_time(demo: Served) -> None:
    """A client that sends a minute in one message gets its results as they come, and a Recognize asked
    for once its first final is in is answered while most of the minute is still to come."""
    sample = as_bytes(pcm_of(SAMPLE))
    pause = as_bytes(np.zeros(RATE, np.float32))
    repeats = 8
    finals_at: list[float] = []

    def listen() -> None:
        requests = iter([riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config(interim=False)),
                         riva_asr_pb2.StreamingRecognizeRequest(audio_content=(sample + pause) * repeats)])
        for response in demo.asr().stub.StreamingRecognize(requests):
            finals_at.extend(time.monotonic() for r in response.results if r.is_final)

    listener = threading.Thread(target=listen)
    listener.start()
    poll(lambda: bool(finals_at), timeout=120)
    response = demo.asr().offline_recognize(SAMPLE.read_bytes(), riva.client.RecognitionConfig(language_code="en-US"))
    answered = time.monotonic()
    listener.join(120)
    before = sum(t < answered for t in finals_at)
    assert before < repeats / 2, f"Recognize waited for {before} of the stream's {len(finals_at)} finals"
    assert len(finals_at) == repeats
    assert error_counts(SAMPLE.with_suffix(".txt").read_text(), response.results[0].alternatives[0].transcript)[0] <= 1
