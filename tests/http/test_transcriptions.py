"""`POST /v1/audio/transcriptions` and friends through the official `openai` SDK, against a live server on the
demo model: every response format agrees with Riva's `Recognize`, and every refusal is OpenAI's envelope."""

from __future__ import annotations

import contextlib
import io
import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import riva.client
import soundfile as sf

from parakeet_serve.engine import NemoEngine
from parakeet_serve.evaluation import error_counts, normalise
from parakeet_serve.warmup import sample_path
from tests.audio.compressed import encode
from tests.conftest import MISHEARD, LoopThread, Served, start_server
from tests.telemetry.scrape import Scrape
from tests.test_cli import free_port

SAMPLE = sample_path()
OTHER = SAMPLE.with_name("held-out-voice.wav")
CUE = re.compile(r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)")


@pytest.fixture(scope="module")
def demo(loop_thread: LoopThread, demo_engine: NemoEngine) -> Iterator[Served]:
    served = start_server(loop_thread, demo_engine, model_id="demo", http_port=free_port(), max_upload_mb=4,
                          progressive_piece_s=9)
    yield served
    served.stop()


def client(served: Served, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{served.app.http.port}/v1", api_key=api_key, max_retries=0)


def riva_text(served: Served, path: Path) -> str:
    response = served.asr().offline_recognize(path.read_bytes(), riva.client.RecognitionConfig(
        language_code="en-US", enable_automatic_punctuation=True))
    return " ".join(r.alternatives[0].transcript for r in response.results)


@pytest.fixture(scope="module")
def two_utterances(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both bundled samples with a second of silence between them: two segments."""
    first, rate = sf.read(SAMPLE, dtype="float32")
    second, _ = sf.read(OTHER, dtype="float32")
    path = tmp_path_factory.mktemp("audio") / "two.wav"
    sf.write(path, np.concatenate([first, np.zeros(rate, np.float32), second]), rate)
    return path


def cue_times(text: str) -> list[tuple[float, float]]:
    def seconds(h: str, m: str, s: str, ms: str) -> float:
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000
    return [(seconds(*m.groups()[:4]), seconds(*m.groups()[4:])) for m in CUE.finditer(text)]


def test_json_and_text_equal_what_riva_recognize_says(demo: Served) -> None:
    api, expected = client(demo), riva_text(demo, SAMPLE)
    assert normalise(expected) == normalise(SAMPLE.with_suffix(".txt").read_text())
    assert api.audio.transcriptions.create(model="demo", file=SAMPLE.open("rb")).text == expected
    text = api.audio.transcriptions.create(model="demo", file=SAMPLE.open("rb"), response_format="text")
    assert text.strip() == expected


def test_verbose_json_has_segments_words_and_usage(demo: Served, demo_engine: NemoEngine,
                                                   two_utterances: Path) -> None:
    result = client(demo).audio.transcriptions.create(
        model="demo", file=two_utterances.open("rb"), response_format="verbose_json",
        timestamp_granularities=["word", "segment"])
    assert result.text == riva_text(demo, two_utterances)
    assert result.duration == pytest.approx(sf.info(two_utterances).duration, abs=0.05)
    assert len(result.segments) == 2 and result.segments[0].end < result.segments[1].start
    assert " ".join(s.text for s in result.segments).split() == [w.word for w in result.words]
    logprobs = client(demo).audio.transcriptions.create(model="demo", file=two_utterances.open("rb"),
                                                        include=["logprobs"]).logprobs
    assert sum(len(s.tokens) for s in result.segments) == len(logprobs)
    taken = 0
    for segment in result.segments:  # each segment's own tokens spell it, and score it
        assert demo_engine.detokenize(segment.tokens).strip() == segment.text
        mine = logprobs[taken:taken + len(segment.tokens)]
        taken += len(segment.tokens)
        assert segment.avg_logprob == pytest.approx(sum(t.logprob for t in mine) / len(mine), abs=1e-5)
        assert segment.avg_logprob < 0 and 0 <= segment.no_speech_prob < 0.5 and segment.compression_ratio > 0
    for word in result.words:
        assert 0 <= word.start < word.end <= result.duration + 0.1
    plain = client(demo).audio.transcriptions.create(model="demo", file=SAMPLE.open("rb"),
                                                     response_format="verbose_json")
    assert plain.segments and not plain.words  # segments by default, words when asked


@pytest.mark.parametrize("kind", ["srt", "vtt"])
def test_subtitles_parse_and_their_cues_fall_inside_the_speech(demo: Served, two_utterances: Path, kind: str) -> None:
    text = client(demo).audio.transcriptions.create(model="demo", file=two_utterances.open("rb"), response_format=kind)
    assert text.startswith("WEBVTT") if kind == "vtt" else text.startswith("1\n")
    cues = cue_times(text)
    duration = sf.info(two_utterances).duration
    assert len(cues) == 2
    for start, end in cues:
        assert 0 <= start < end <= duration
    assert cues[0][1] <= cues[1][0]


def test_streaming_sends_deltas_then_one_done_with_their_sum(demo: Served, two_utterances: Path) -> None:
    events = list(client(demo).audio.transcriptions.create(model="demo", file=two_utterances.open("rb"), stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) >= 2 and len(done) == 1 and events[-1].type == "transcript.text.done"
    assert done[0].text == "".join(deltas) == riva_text(demo, two_utterances)


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample twelve times over, with two seconds of silence after each: 65 s, about two sentences per
    9 s piece."""
    samples, rate = sf.read(SAMPLE, dtype="float32")
    path = tmp_path_factory.mktemp("audio") / "long.wav"
    sf.write(path, np.concatenate([samples, np.zeros(2 * rate, np.float32)] * 12), rate)
    return path


def test_a_long_file_streams_its_text_as_recognition_progresses(demo: Served, long_recording: Path) -> None:
    began, events, arrivals = time.monotonic(), [], []
    for event in client(demo).audio.transcriptions.create(model="demo", file=long_recording.open("rb"),
                                                          stream=True):
        events.append(event)
        arrivals.append(time.monotonic() - began)
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert [e.type for e in events].count("transcript.text.done") == 1 and events[-1].type == "transcript.text.done"
    assert events[-1].text == "".join(deltas) and len(deltas) >= 12
    truth = " ".join([SAMPLE.with_suffix(".txt").read_text()] * 12)
    errors, words, _, _ = error_counts(truth, events[-1].text)
    assert errors <= 0.05 * words, events[-1].text  # pieces are cut in pauses: no word is lost at a cut
    # Twelve pieces, at most two queued at a time: the first text leaves long before the last.
    assert arrivals[0] < 0.6 * arrivals[-1], arrivals


@pytest.mark.parametrize(
    ("arguments", "status", "param", "said"),
    [
        ({"model": "whisper-large"}, 400, "model", "is not served here"),
        ({"language": "fr"}, 400, "language", "Language 'fr' is not served here"),
        ({"response_format": "html"}, 400, "response_format", "is not one of"),
        ({"response_format": "json", "timestamp_granularities": ["word"]}, 400, "timestamp_granularities",
         "needs response_format 'verbose_json'"),
        ({"file": ("noise.wav", b"RIFF\x00\x00not really a wav")}, 400, "file", "audio"),
        ({"file": ("notes.txt", b"shopping: eggs, milk")}, 400, "file", "not audio this server reads: send WAV"),
    ],
)
def test_bad_requests_are_refused_in_openais_envelope(demo: Served, arguments: dict, status: int, param: str | None,
                                                     said: str) -> None:
    request = {"model": "demo", "file": SAMPLE.open("rb"), **arguments}
    with pytest.raises(openai.APIStatusError) as refused:
        client(demo).audio.transcriptions.create(**request)
    assert refused.value.status_code == status
    error = refused.value.body
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert said in error["message"]


def test_a_long_model_name_is_quoted_only_in_part(demo: Served) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(demo).audio.transcriptions.create(model="x" * 10_000, file=SAMPLE.open("rb"))
    assert len(refused.value.body["message"]) < 200


def test_an_upload_over_the_limit_is_413(demo: Served) -> None:
    big = io.BytesIO(b"\x00" * (5 * 1024 * 1024))
    with pytest.raises(openai.APIStatusError) as refused:
        client(demo).audio.transcriptions.create(model="demo", file=("big.wav", big))
    assert refused.value.status_code == 413 and "at most 4 MiB" in refused.value.body["message"]


def read_response(sock: socket.socket) -> str:
    """A whole response off a raw socket: its head, then as much body as its Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data and (more := sock.recv(65536)):
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    declared = re.search(rb"(?i)content-length: *(\d+)", head)
    length = int(declared.group(1)) if declared else 0
    while len(body) < length and (more := sock.recv(65536)):
        body += more
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


def test_a_chunked_upload_is_refused_as_soon_as_it_passes_the_limit(demo: Served) -> None:
    """No Content-Length to check first: the body is counted as it arrives, and the 413 comes at the limit, not
    after the whole body (200 MiB here) has been read and spooled."""
    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data)

    with socket.create_connection(("127.0.0.1", demo.app.http.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
        sock.sendall(chunk(b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'))
        sent_mib = 0
        while sent_mib < 200 and not select.select([sock], [], [], 0)[0]:  # until the server answers
            try:
                sock.sendall(chunk(b"\x00" * 2**20))
            except (TimeoutError, OSError):  # it stopped reading
                break
            sent_mib += 1
        answer = read_response(sock)
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "at most 4 MiB" in answer and sent_mib < 50, sent_mib


@pytest.mark.parametrize(("method", "path", "status", "code", "says"), [
    ("GET", "/v1/audio/transcriptions", 405, "method_not_allowed", "does not take GET; it takes POST"),
    ("POST", "/v1/audio/speech", 404, "not_found", "There is no '/v1/audio/speech' here."),
])
def test_a_path_or_method_no_route_takes_gets_openais_envelope(demo: Served, method: str, path: str, status: int,
                                                               code: str, says: str) -> None:
    response = httpx.request(method, f"http://127.0.0.1:{demo.app.http.port}{path}")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code and says in response.json()["error"]["message"]


def test_translations_are_refused_clearly(demo: Served) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(demo).audio.translations.create(model="demo", file=SAMPLE.open("rb"))
    assert "Translation is not supported" in refused.value.body["message"]


def test_models_list_the_served_model(demo: Served) -> None:
    api = client(demo)
    assert [m.id for m in api.models.list()] == ["demo"]
    assert api.models.retrieve("demo").id == "demo"
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("whisper-1")


def test_apps_that_hard_code_another_model_name_work_through_its_alias(loop_thread: LoopThread,
                                                                        demo_engine: NemoEngine) -> None:
    served = start_server(loop_thread, demo_engine, model_id="demo", http_port=free_port(),
                          model_aliases="whisper-1,gpt-4o-transcribe")
    try:
        api = client(served)
        assert [m.id for m in api.models.list()] == ["demo", "whisper-1", "gpt-4o-transcribe"]
        assert api.models.retrieve("whisper-1").id == "whisper-1"
        text = api.audio.transcriptions.create(model="whisper-1", file=SAMPLE.open("rb")).text
        assert text == api.audio.transcriptions.create(model="demo", file=SAMPLE.open("rb")).text
        riva_config = riva.client.RecognitionConfig(language_code="en-US", model="gpt-4o-transcribe")
        assert served.asr().offline_recognize(SAMPLE.read_bytes(), riva_config).results
        with pytest.raises(openai.BadRequestError, match="is not served here"):
            api.audio.transcriptions.create(model="whisper-2", file=SAMPLE.open("rb"))
    finally:
        served.stop()


def test_a_token_is_required_when_configured_and_health_stays_open(loop_thread: LoopThread,
                                                                   engine: NemoEngine) -> None:
    served = start_server(loop_thread, engine, http_port=free_port(), auth_token="s3cret")
    try:
        with pytest.raises(openai.AuthenticationError):
            client(served).models.list()
        assert client(served, api_key="s3cret").models.list().data
        assert httpx.get(f"http://127.0.0.1:{served.app.http.port}/healthz").status_code == 200
    finally:
        served.stop()


def test_readyz_and_requests_are_503_until_the_model_is_ready(loop_thread: LoopThread, engine: NemoEngine) -> None:
    served = start_server(loop_thread, engine, load=False, http_port=free_port(), shutdown_grace_s=1)
    base = f"http://127.0.0.1:{served.app.http.port}"
    try:
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 503
        with pytest.raises(openai.InternalServerError) as refused:
            client(served).audio.transcriptions.create(model="tiny", file=SAMPLE.open("rb"))
        assert refused.value.status_code == 503 and "loading" in refused.value.body["message"]
        served.loop.run(served.app.load())
        assert httpx.get(f"{base}/readyz").status_code == 200
    finally:
        served.stop()


@pytest.mark.parametrize("kind", ["mp3", "m4a", "webm"])
def test_compressed_uploads_are_transcribed_like_the_wav(demo: Served, kind: str) -> None:
    samples, rate = sf.read(SAMPLE, dtype="float32")
    upload = (f"sample.{kind}", encode(samples, rate, kind))
    text = client(demo).audio.transcriptions.create(model="demo", file=upload).text
    errors = error_counts(riva_text(demo, SAMPLE), text)[0]
    assert errors <= 1, (kind, text)  # a lossy codec may cost a word, not the sentence


def test_http_requests_count_in_the_metrics_by_route_status_and_audio(demo: Served) -> None:
    before = Scrape(demo.metrics_url)
    client(demo).audio.transcriptions.create(model="demo", file=SAMPLE.open("rb"))
    with pytest.raises(openai.BadRequestError):
        client(demo).audio.transcriptions.create(model="nope", file=SAMPLE.open("rb"))
    after = Scrape(demo.metrics_url)

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    route = "/v1/audio/transcriptions"
    assert grew("parakeet_http_requests_total", route=route, status="200") == 1
    assert grew("parakeet_http_requests_total", route=route, status="400") == 1
    assert grew("parakeet_audio_seconds_total", rpc="Transcriptions") == pytest.approx(sf.info(SAMPLE).duration,
                                                                                        abs=0.01)
    assert grew("parakeet_request_duration_seconds_count", rpc="Transcriptions") == 2
    assert grew("parakeet_real_time_factor_count", rpc="Transcriptions") == 1  # successes only


def test_cors_is_off_by_default_and_allows_only_the_configured_origins(demo: Served, loop_thread: LoopThread,
                                                                       engine: NemoEngine) -> None:
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    url = "/v1/audio/transcriptions"
    off = httpx.options(f"http://127.0.0.1:{demo.app.http.port}{url}", headers=preflight)
    assert "access-control-allow-origin" not in off.headers
    served = start_server(loop_thread, engine, http_port=free_port(), http_cors_origins="https://app.example.com")
    try:
        base = f"http://127.0.0.1:{served.app.http.port}"
        allowed = httpx.options(f"{base}{url}", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        other = httpx.options(f"{base}{url}", headers={**preflight, "Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in other.headers
    finally:
        served.stop()


def test_logprobs_are_the_decoders_tokens_and_spell_the_text(demo: Served) -> None:
    result = client(demo).audio.transcriptions.create(model="demo", file=SAMPLE.open("rb"), include=["logprobs"])
    tokens = result.logprobs
    assert len(tokens) >= len(result.text.split())  # word pieces (whole words, in the demo's small vocabulary)
    assert "".join(t.token for t in tokens).strip() == result.text
    assert all(t.logprob <= 0 and bytes(int(b) for b in t.bytes).decode() == t.token for t in tokens)
    assert min(t.logprob for t in tokens) > -5  # a sentence the demo model gets right is not a coin toss
    with pytest.raises(openai.BadRequestError) as refused:
        client(demo).audio.transcriptions.create(model="demo", file=SAMPLE.open("rb"), include=["logprobs"],
                                                 response_format="text")
    assert refused.value.body["param"] == "include"
    events = list(client(demo).audio.transcriptions.create(model="demo", file=SAMPLE.open("rb"), stream=True,
                                                           include=["logprobs"]))
    assert [t.token for t in events[-1].logprobs] == [t.token for t in tokens]


def test_the_prompts_short_phrases_are_boosted_words(demo: Served) -> None:
    def text(**prompt: str) -> str:
        return client(demo).audio.transcriptions.create(model="demo", file=MISHEARD.clip.open("rb"), **prompt).text

    plain = text()
    assert MISHEARD.corrects(plain, text(prompt=f"{MISHEARD.said.title()}, Rachel Young"))
    # A sentence of context is not vocabulary: nothing in it is boosted.
    assert text(prompt=f"This is a voicemail where {MISHEARD.said} says when she will call") == plain


def test_slow_clients_are_cut_off_and_others_are_served_meanwhile(loop_thread: LoopThread,
                                                                   demo_engine: NemoEngine) -> None:
    """Slowloris: 40 connections sending their headers a byte at a time, one sending nothing, and one whose
    body stalls, each answered 408 (or closed) at its deadline, while a transcription goes through."""
    served = start_server(loop_thread, demo_engine, model_id="demo", http_port=free_port(),
                          http_header_timeout_s=1.0, http_body_timeout_s=1.0)
    address = ("127.0.0.1", served.app.http.port)
    head = b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 1000
    try:
        slow = [socket.create_connection(address, timeout=10) for _ in range(40)]
        silent = socket.create_connection(address, timeout=10)
        stalled = socket.create_connection(address, timeout=10)
        stalled.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n"
                        b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n")
        started = time.monotonic()
        with SAMPLE.open("rb") as audio:
            text = client(served).audio.transcriptions.create(model="demo", file=audio, response_format="text")
        answers = [b""] * len(slow)
        for i in range(len(head)):  # a byte per socket every 50 ms, until each is answered
            for n, sock in enumerate(slow):
                if not answers[n]:
                    with contextlib.suppress(OSError):
                        sock.sendall(head[i : i + 1])
                    if select.select([sock], [], [], 0)[0]:
                        answers[n] = read_response(sock).encode()
            if all(answers) or time.monotonic() - started > 15:
                break
            time.sleep(0.05)
        cut_off_after = time.monotonic() - started
        body_refused = read_response(stalled)
        silent_closed = silent.recv(65536)
    finally:
        for sock in (*slow, silent, stalled):
            sock.close()
        served.stop()
    assert error_counts(SAMPLE.with_suffix(".txt").read_text(), text)[0] <= 1
    assert all(a.startswith(b"HTTP/1.1 408") and b"header_timeout" in a for a in answers), answers[:1]
    assert cut_off_after < 10, cut_off_after
    assert body_refused.startswith("HTTP/1.1 408") and "No part of the body arrived for 1 s" in body_refused
    assert silent_closed == b""
