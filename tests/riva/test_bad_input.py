"""Malformed requests get the right status with one sentence, and the server keeps serving."""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import soundfile as sf
from riva.client.proto import riva_asr_pb2, riva_audio_pb2

from parakeet_serve.engine import NemoEngine
from tests.conftest import LoopThread, Served, ServeFactory, pcm16, speechlike, start_server

OK, BAD, BIG = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
PCM, FLAC, MULAW, ALAW, OPUS, UNSPEC = (
    riva_audio_pb2.LINEAR_PCM, riva_audio_pb2.FLAC, riva_audio_pb2.MULAW, riva_audio_pb2.ALAW,
    riva_audio_pb2.OGGOPUS, riva_audio_pb2.ENCODING_UNSPECIFIED,
)
MAX_SECONDS = 5.0
SPEECH = speechlike(1.5, seed=11)
NOISE = np.random.default_rng(5).bytes(8000)


def file_bytes(samples: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples.T, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


WAV = file_bytes(SPEECH, 16000, "WAV", "PCM_16")
FLAC_FILE = file_bytes(SPEECH, 16000, "FLAC", "PCM_16")
OGG_FILE = file_bytes(SPEECH, 16000, "OGG", "OPUS")


def wav_header(rate: int = 16000, channels: int = 1, data_bytes: int = 0) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + \
        struct.pack("<I", data_bytes)


def nan_wav() -> bytes:
    samples = SPEECH.copy()
    samples[0, 10] = np.nan
    return file_bytes(samples, 16000, "WAV", "FLOAT")


def cfg(encoding: int = UNSPEC, rate: int = 0, channels: int = 0, **extra) -> riva_asr_pb2.RecognitionConfig:
    extra.setdefault("language_code", "en-US")
    return riva_asr_pb2.RecognitionConfig(
        encoding=encoding, sample_rate_hertz=rate, audio_channel_count=channels, **extra
    )


CASES = [
    ("empty raw pcm", b"", cfg(PCM, 16000), BAD),
    ("empty unspecified", b"", cfg(), BAD),
    ("random bytes unspecified", NOISE, cfg(), BAD),
    ("random bytes as FLAC", NOISE, cfg(FLAC, 16000), BAD),
    ("random bytes as OGGOPUS", NOISE, cfg(OPUS, 16000), BAD),
    ("random bytes as MULAW without rate", NOISE, cfg(MULAW), BAD),
    ("odd byte count pcm", NOISE + b"\x01", cfg(PCM, 16000), BAD),
    ("pcm without sample rate", pcm16(SPEECH), cfg(PCM), BAD),
    ("pcm at 4 kHz", pcm16(SPEECH), cfg(PCM, 4000), BAD),
    ("pcm at 1 Hz", pcm16(SPEECH), cfg(PCM, 1), BAD),
    ("pcm at 1 MHz", pcm16(SPEECH), cfg(PCM, 1_000_000), BAD),
    ("negative sample rate", pcm16(SPEECH), cfg(PCM, -16000), BAD),
    ("nine channels", pcm16(SPEECH), cfg(PCM, 16000, 9), BAD),
    ("bytes not a whole 3-channel frame", b"\x00" * 8, cfg(PCM, 16000, 3), BAD),
    ("unknown encoding value", pcm16(SPEECH), cfg(7, 16000), BAD),
    ("truncated wav header", WAV[:20], cfg(), BAD),
    ("wav header without data", wav_header(), cfg(), BAD),
    ("wav with zero channels", wav_header(channels=0, data_bytes=64) + b"\x00" * 64, cfg(), BAD),
    ("wav with zero sample rate", wav_header(rate=0, data_bytes=64) + b"\x00" * 64, cfg(), BAD),
    ("wav at 4 kHz", file_bytes(SPEECH, 4000, "WAV", "PCM_16"), cfg(), BAD),
    ("wav with NaN samples", nan_wav(), cfg(), BAD),
    ("flac cut after its header", FLAC_FILE[:60], cfg(), BAD),
    ("flac magic then garbage", b"fLaC" + NOISE, cfg(), BAD),
    ("ogg cut short", OGG_FILE[:50], cfg(), BAD),
    ("ogg magic then garbage", b"OggS" + NOISE, cfg(), BAD),
    ("wav declared FLAC", WAV, cfg(FLAC), BAD),
    ("ogg declared LINEAR_PCM", OGG_FILE, cfg(PCM, 16000), BAD),
    ("flac declared MULAW", FLAC_FILE, cfg(MULAW, 16000), BAD),
    ("raw pcm longer than the limit", pcm16(speechlike(6.0)), cfg(PCM, 16000), BAD),
    ("flac longer than the limit", file_bytes(speechlike(6.0), 16000, "FLAC", "PCM_16"), cfg(), BAD),
    ("unknown model", WAV, cfg(model="nemo-xl"), BAD),
    ("unknown language", WAV, cfg(language_code="fr-FR"), BAD),
    ("message over the size limit", b"\x00" * (1024 * 1024 + 10), cfg(PCM, 16000), BIG),
    # Damaged but decodable input is recognised, as Riva does:
    ("wav declaring far more data than sent", wav_header(data_bytes=2**31) + pcm16(SPEECH), cfg(), OK),
    ("clipped full-scale audio", pcm16(np.sign(SPEECH)), cfg(PCM, 16000), OK),
    ("silence", b"\x00" * 32000, cfg(PCM, 16000), OK),
    ("eight channels", pcm16(np.repeat(SPEECH, 8, axis=0)), cfg(PCM, 16000, 8), OK),
    ("negative max_alternatives", WAV, cfg(max_alternatives=-3), OK),
]


def test_table_is_large_enough() -> None:
    assert sum(1 for c in CASES if c[3] != OK) >= 30


@pytest.mark.parametrize(("name", "audio", "config", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_its_status_and_the_next_request_works(
    serve_module, name: str, audio: bytes, config: riva_asr_pb2.RecognitionConfig, expected: grpc.StatusCode
) -> None:
    stub = serve_module.asr().stub
    try:
        stub.Recognize(riva_asr_pb2.RecognizeRequest(config=config, audio=audio), timeout=60)
        code, details = OK, ""
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details()
    assert code == expected, details
    if code != OK:
        assert details and "\n" not in details and len(details) < 300
        assert code != grpc.StatusCode.UNKNOWN
    good = stub.Recognize(riva_asr_pb2.RecognizeRequest(config=cfg(), audio=WAV), timeout=60)
    assert good.results[0].audio_processed == pytest.approx(1.5, abs=0.02)


@pytest.fixture(scope="module")
def serve_module(engine: NemoEngine, loop_thread: LoopThread) -> Iterator[Served]:
    served = start_server(loop_thread, engine, max_audio_seconds=MAX_SECONDS, max_upload_mb=1)
    yield served
    served.stop()


def test_random_garbage_never_gives_unknown(serve: ServeFactory) -> None:
    """Fuzz-like: 60 random prefixes of real files and random bytes under every encoding."""
    served = serve(max_audio_seconds=MAX_SECONDS)
    stub = served.asr().stub
    rng = np.random.default_rng(0)
    sources = [WAV, FLAC_FILE, OGG_FILE, NOISE]
    for _ in range(60):
        source = sources[rng.integers(len(sources))]
        data = bytearray(source[: rng.integers(1, len(source))])
        for _ in range(rng.integers(0, 8)):
            data[rng.integers(len(data))] = rng.integers(256)
        config = cfg(int(rng.choice([UNSPEC, PCM, FLAC, MULAW, ALAW, OPUS])), int(rng.choice([0, 8000, 16000])))
        try:
            stub.Recognize(riva_asr_pb2.RecognizeRequest(config=config, audio=bytes(data)), timeout=60)
        except grpc.RpcError as exc:
            assert exc.code() in (BAD, grpc.StatusCode.OK), (exc.code(), exc.details())
    assert stub.Recognize(riva_asr_pb2.RecognizeRequest(config=cfg(), audio=WAV), timeout=60).results


def test_a_huge_language_code_is_quoted_only_in_part(serve_module: Served) -> None:
    """A 10 KB field echoed whole would make the status itself too big for some clients."""
    config = riva_asr_pb2.RecognitionConfig(language_code="x" * 10_000)
    with pytest.raises(grpc.RpcError) as refused:
        serve_module.asr().offline_recognize(WAV, config)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(refused.value.details()) < 200 and "(10000 characters)" in refused.value.details()


def stream_cfg(encoding: int = PCM, rate: int = 16000, channels: int = 1, **extra
               ) -> riva_asr_pb2.StreamingRecognizeRequest:
    config = riva_asr_pb2.StreamingRecognitionConfig(config=cfg(encoding, rate, channels, **extra))
    return riva_asr_pb2.StreamingRecognizeRequest(streaming_config=config)


def audio(data: bytes) -> riva_asr_pb2.StreamingRecognizeRequest:
    return riva_asr_pb2.StreamingRecognizeRequest(audio_content=data)


STREAM_CASES = [
    ("no streaming_config first", [audio(pcm16(SPEECH))]),
    ("streaming_config twice", [stream_cfg(), stream_cfg()]),
    ("FLAC in a stream", [stream_cfg(FLAC), audio(FLAC_FILE)]),
    ("unknown encoding value", [stream_cfg(7), audio(pcm16(SPEECH))]),
    ("pcm at 1 MHz", [stream_cfg(rate=1_000_000), audio(pcm16(SPEECH))]),
    ("pcm at 4 kHz", [stream_cfg(rate=4000), audio(pcm16(SPEECH))]),
    ("nine channels", [stream_cfg(channels=9), audio(pcm16(np.repeat(SPEECH, 9, axis=0)))]),
    ("negative sample rate", [stream_cfg(rate=-16000), audio(pcm16(SPEECH))]),
    ("pcm without sample rate", [stream_cfg(rate=0), audio(pcm16(SPEECH))]),
    ("random bytes unspecified", [stream_cfg(UNSPEC, 0, 0), audio(NOISE)]),
    ("truncated wav header", [stream_cfg(UNSPEC, 0, 0), audio(WAV[:20])]),
    ("wav with zero channels", [stream_cfg(UNSPEC, 0, 0), audio(wav_header(channels=0, data_bytes=64))]),
    ("wav at 4 kHz", [stream_cfg(UNSPEC, 0, 0), audio(file_bytes(SPEECH, 4000, "WAV", "PCM_16"))]),
    ("a PCM wav header where MULAW is declared", [stream_cfg(MULAW, 16000), audio(WAV)]),
    ("unknown language", [stream_cfg(language_code="fr-FR"), audio(pcm16(SPEECH))]),
    ("unknown model", [stream_cfg(model="nemo-xl"), audio(pcm16(SPEECH))]),
]


@pytest.fixture(scope="module")
def busy(engine: NemoEngine, loop_thread: LoopThread) -> Iterator[Served]:
    """A server whose one inference thread is held by a Recognize, with a stream open and its steps waiting."""
    from tests.riva.test_admission import HeldEngine, poll  # it imports this module's WAV

    held = HeldEngine(engine)
    served = start_server(loop_thread, held, max_streams=2, max_upload_mb=1)
    first = served.asr().offline_recognize(WAV, cfg(), future=True)
    poll(lambda: held.entered == 1)
    release = threading.Event()

    def waiting() -> Iterator[riva_asr_pb2.StreamingRecognizeRequest]:
        yield stream_cfg()
        yield audio(pcm16(speechlike(2.0)))
        release.wait(120)

    stream = served.asr().stub.StreamingRecognize(waiting())
    poll(lambda: served.app._scheduler.active_streams == 1)
    yield served
    release.set()
    held.gate.set()
    first.result(60)
    list(stream)
    served.stop()


@pytest.mark.parametrize(("name", "requests"), STREAM_CASES, ids=[c[0] for c in STREAM_CASES])
def test_a_malformed_stream_is_refused_at_once_while_the_model_is_busy(busy: Served, name: str,
                                                                        requests: list) -> None:
    """Refused before any of its audio is queued, so however long the model is busy (here: held), the answer
    comes at once; and it never takes the last stream slot from a good stream."""
    with pytest.raises(grpc.RpcError) as refused:
        list(busy.asr().stub.StreamingRecognize(iter(requests), timeout=10))
    assert refused.value.code() == BAD, refused.value.details()
    assert "\n" not in refused.value.details() and len(refused.value.details()) < 300
    assert busy.app._scheduler.active_streams == 1


def test_a_stream_with_a_bad_config_is_refused_as_bad_even_when_no_stream_slot_is_free(busy: Served) -> None:
    """Its config is checked before it asks for a slot: a client is told to fix it, not to retry later."""
    release = threading.Event()

    def waiting() -> Iterator[riva_asr_pb2.StreamingRecognizeRequest]:
        yield stream_cfg()
        release.wait(60)

    second = busy.asr().stub.StreamingRecognize(waiting())
    try:
        from tests.riva.test_admission import poll

        poll(lambda: busy.app._scheduler.active_streams == 2)
        for name, requests in STREAM_CASES:
            if name in ("pcm at 1 MHz", "pcm at 4 kHz", "nine channels", "FLAC in a stream", "unknown language"):
                with pytest.raises(grpc.RpcError) as refused:
                    list(busy.asr().stub.StreamingRecognize(iter(requests), timeout=10))
                assert refused.value.code() == BAD, (name, refused.value.details())
    finally:
        second.cancel()  # its finish would wait for the held model
        release.set()
