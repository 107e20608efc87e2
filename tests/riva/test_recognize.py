"""Recognize through a real server on loopback, driven by the real `nvidia-riva-client`."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import riva.client
import soundfile as sf
from riva.client.proto import riva_asr_pb2

from parakeet_serve.engine import NemoEngine
from parakeet_serve.logs import JsonFormatter
from tests.conftest import LoopThread, Served, ServeFactory, pcm16, rpc_code, speechlike, start_server


@pytest.fixture(scope="module")
def server(engine: NemoEngine, loop_thread: LoopThread) -> Iterator[Served]:
    """One server for this module's tests, which change nothing on it."""
    served = start_server(loop_thread, engine)
    yield served
    served.stop()


def config(**fields) -> riva.client.RecognitionConfig:
    return riva.client.RecognitionConfig(language_code="en-US", **fields)


def container(samples: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples.T, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def recognize(server: Served, data: bytes, cfg: riva.client.RecognitionConfig) -> riva_asr_pb2.RecognizeResponse:
    return server.asr().offline_recognize(data, cfg)


AUDIO = speechlike(2.5, seed=7)


def encodings(audio: np.ndarray) -> dict[str, tuple[bytes, dict]]:
    """`audio` (16 kHz) in every encoding a client may send, with the config fields each needs."""
    return {name: (data, fields) for name, data, fields in _encodings(audio)}


def _encodings(audio: np.ndarray):
    pcm = riva.client.AudioEncoding.LINEAR_PCM
    yield "raw LINEAR_PCM", pcm16(audio), dict(encoding=pcm, sample_rate_hertz=16000, audio_channel_count=1)
    yield "sniffed WAV", container(audio, 16000, "WAV", "PCM_16"), {}
    yield "WAV declared LINEAR_PCM", container(audio, 16000, "WAV", "PCM_16"), dict(encoding=pcm)
    yield "sniffed FLAC", container(audio, 16000, "FLAC", "PCM_16"), {}
    yield "FLAC", container(audio, 16000, "FLAC", "PCM_16"), dict(encoding=riva.client.AudioEncoding.FLAC)
    yield "MULAW", container(audio, 8000 * 2, "RAW", "ULAW"), dict(
        encoding=riva.client.AudioEncoding.MULAW, sample_rate_hertz=16000)
    yield "ALAW", container(audio, 16000, "RAW", "ALAW"), dict(
        encoding=riva.client.AudioEncoding.ALAW, sample_rate_hertz=16000)
    yield "sniffed OGG", container(audio, 16000, "OGG", "OPUS"), {}
    yield "OGGOPUS", container(audio, 16000, "OGG", "OPUS"), dict(encoding=riva.client.AudioEncoding.OGGOPUS)


ENCODINGS = encodings(AUDIO)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_each_encoding_is_recognised(server: Served, name: str) -> None:
    data, fields = ENCODINGS[name]
    response = recognize(server, data, config(**fields))
    assert len(response.results) == 1
    result = response.results[0]
    assert result.audio_processed == pytest.approx(2.5, abs=0.03)
    assert len(result.alternatives) == 1


def test_lossless_encodings_give_identical_transcripts(server: Served) -> None:
    texts = {name: recognize(server, *_args(name)).results[0].alternatives[0].transcript
             for name in ("raw LINEAR_PCM", "sniffed WAV", "sniffed FLAC", "FLAC")}
    assert len(set(texts.values())) == 1, texts


def _args(name):
    data, fields = ENCODINGS[name]
    return data, config(**fields)


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_sample_rates_are_resampled(server: Served, rate: int) -> None:
    audio = speechlike(2.0, rate=rate, seed=1)
    response = recognize(server, container(audio, rate, "WAV", "PCM_16"), config())
    assert response.results[0].audio_processed == pytest.approx(2.0, abs=0.02)


def test_stereo_is_downmixed_to_one_result(server: Served) -> None:
    stereo = speechlike(2.0, channels=2)
    fields = dict(encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000, audio_channel_count=2)
    response = recognize(server, pcm16(stereo), config(**fields))
    assert [r.channel_tag for r in response.results] == [0]
    mono = recognize(server, pcm16(stereo.mean(axis=0, keepdims=True)),
                     config(**{**fields, "audio_channel_count": 1}))
    assert response.results[0].alternatives[0].transcript == mono.results[0].alternatives[0].transcript


def test_separate_recognition_per_channel(server: Served) -> None:
    stereo = speechlike(2.0, channels=2)
    cfg = config(enable_separate_recognition_per_channel=True)
    response = recognize(server, container(stereo, 16000, "WAV", "PCM_16"), cfg)
    assert [r.channel_tag for r in response.results] == [0, 1]
    for channel, result in enumerate(response.results):
        alone = recognize(server, container(stereo[channel : channel + 1], 16000, "WAV", "PCM_16"), config())
        assert result.alternatives[0].transcript == alone.results[0].alternatives[0].transcript


def test_word_time_offsets_in_milliseconds_inside_the_audio(server: Served) -> None:
    response = recognize(server, *_args("sniffed WAV")[:1], config(enable_word_time_offsets=True))
    alternative = response.results[0].alternatives[0]
    words = alternative.words
    assert [w.word for w in words] == alternative.transcript.split()
    for w in words:
        assert 0 <= w.start_time < w.end_time <= 2600
        assert 0.0 <= w.confidence <= 1.0
    without = recognize(server, ENCODINGS["sniffed WAV"][0], config())
    assert len(without.results[0].alternatives[0].words) == 0


def test_punctuation_off_strips_case_and_marks(server: Served) -> None:
    # The tiny model's vocabulary has no punctuation, so check what the core does with a real mark:
    from parakeet_serve.text import strip_punctuation_and_case

    assert strip_punctuation_and_case("Hello, World! It's 9:30.") == "hello world it's 9 30"
    off = recognize(server, ENCODINGS["sniffed WAV"][0], config(enable_automatic_punctuation=False))
    on = recognize(server, ENCODINGS["sniffed WAV"][0], config(enable_automatic_punctuation=True))
    assert off.results[0].alternatives[0].transcript == strip_punctuation_and_case(
        on.results[0].alternatives[0].transcript)


def test_max_alternatives_are_distinct_and_bounded(server: Served) -> None:
    response = recognize(server, ENCODINGS["sniffed WAV"][0], config(max_alternatives=3))
    alternatives = [a.transcript for a in response.results[0].alternatives]
    assert 1 <= len(alternatives) <= 3
    assert len(set(alternatives)) == len(alternatives)
    single = recognize(server, ENCODINGS["sniffed WAV"][0], config(max_alternatives=1))
    assert alternatives[0] == single.results[0].alternatives[0].transcript


def test_model_and_language_selection(server: Served) -> None:
    name = server.app.recognizer().model_name
    data = ENCODINGS["sniffed WAV"][0]
    assert recognize(server, data, config(model=name)).results
    assert recognize(server, data, riva.client.RecognitionConfig(language_code="")).results
    assert recognize(server, data, riva.client.RecognitionConfig(language_code="en")).results
    asr = server.asr()
    assert rpc_code(lambda: asr.offline_recognize(data, config(model="whisper"))) == grpc.StatusCode.INVALID_ARGUMENT
    bad_language = riva.client.RecognitionConfig(language_code="de-DE")
    assert rpc_code(lambda: asr.offline_recognize(data, bad_language)) == grpc.StatusCode.INVALID_ARGUMENT


def test_request_id_is_echoed(server: Served) -> None:
    stub = server.asr().stub
    request = riva_asr_pb2.RecognizeRequest(config=config(), audio=ENCODINGS["sniffed WAV"][0])
    request.id.value = "req-42"
    assert stub.Recognize(request).id.value == "req-42"


def test_config_rpc_lists_the_served_model(server: Served) -> None:
    stub = server.asr().stub
    response = stub.GetRivaSpeechRecognitionConfig(riva_asr_pb2.RivaSpeechRecognitionConfigRequest())
    assert len(response.model_config) == 1
    model = response.model_config[0]
    assert model.model_name == server.app.recognizer().model_name
    assert model.parameters["type"] == "online"  # it streams, and serves Recognize too
    assert model.parameters["streaming"] == "true"
    assert model.parameters["language_code"] == "en-US"
    assert model.parameters["decoder_type"] == "tdt"
    assert model.parameters["streaming_mode"] == "two_pass"  # chosen for a model trained with full attention
    other = stub.GetRivaSpeechRecognitionConfig(riva_asr_pb2.RivaSpeechRecognitionConfigRequest(model_name="other"))
    assert len(other.model_config) == 0


def test_the_streaming_mode_follows_the_setting_over_the_models_training(serve: ServeFactory) -> None:
    for mode in ("cache_aware", "two_pass"):
        assert serve(stream_mode=mode).app.model_parameters()["streaming_mode"] == mode


def test_riva_metadata_is_tolerated(serve: ServeFactory) -> None:
    served = serve()
    asr = served.asr(metadata_args=[["function-id", "abc"], ["authorization", "Bearer nvapi-whatever"]])
    assert asr.offline_recognize(ENCODINGS["sniffed WAV"][0], config()).results


def test_bearer_token_is_required_when_configured(serve: ServeFactory) -> None:
    served = serve(auth_token="s3cret")
    data = ENCODINGS["sniffed WAV"][0]
    for metadata in (None, [["authorization", "Bearer wrong"]], [["authorization", "s3cret"]]):
        asr = served.asr(metadata_args=metadata)
        with pytest.raises(grpc.RpcError) as info:
            asr.offline_recognize(data, config())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "Bearer" in info.value.details()
    good = served.asr(metadata_args=[["authorization", "Bearer s3cret"]])
    assert good.offline_recognize(data, config()).results


def test_one_log_line_per_request_with_figures_and_no_text(server: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="parakeet_serve")
    cfg = config(profanity_filter=True)
    cfg.speech_contexts.add(phrases=["parakeet"], boost=10.0)
    request = riva_asr_pb2.RecognizeRequest(config=cfg, audio=ENCODINGS["sniffed WAV"][0])
    request.id.value = "log-me"
    transcript = server.asr().stub.Recognize(request).results[0].alternatives[0].transcript
    lines = [r for r in caplog.records if getattr(r, "request_id", None) == "log-me" and r.msg == "request finished"]
    assert len(lines) == 1
    line = lines[0]
    assert (line.rpc, line.code, line.audio_s) == ("Recognize", "OK", 2.5)
    assert line.ignored_fields == ["profanity_filter"]  # speech contexts are acted on: boosting
    assert 0 < line.rtf < 10
    assert 0 <= line.queue_wait_s < 10
    rendered = json.loads(JsonFormatter().format(line))  # what lands on stderr: one JSON object
    assert {"ts", "level", "msg", "rpc", "request_id", "code", "elapsed_s", "audio_s", "rtf"} <= set(rendered)
    assert len(transcript) < 8 or transcript not in caplog.text  # short random words could match by chance
