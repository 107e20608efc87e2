"""The Wyoming front end driven by the `wyoming` library's own async client (as Home Assistant's integration
drives it) against a live server on the demo model, and by raw bytes for what no well-behaved client sends."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import riva.client
import soundfile as sf
import soxr
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from wyoming.asr import Transcribe, Transcript, TranscriptChunk
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event, Eventable, async_read_event
from wyoming.info import Describe, Info
from wyoming.ping import Ping

from parakeet_serve import __version__
from parakeet_serve.engine import NemoEngine
from parakeet_serve.evaluation import read_manifest
from parakeet_serve.telemetry import Telemetry
from parakeet_serve.warmup import sample_path
from tests.conftest import DEMO_EVAL, LoopThread, Served, pcm16, start_server
from tests.riva.test_admission import HeldEngine, busy_server, poll
from tests.telemetry.scrape import Scrape
from tests.test_cli import free_port

SAMPLE = sample_path()
SAMPLE_TEXT = SAMPLE.with_suffix(".txt").read_text().strip()
RATE = 16000
CHUNK = 2048  # bytes per audio-chunk: 64 ms of 16 kHz 16-bit mono, as Home Assistant sends
EVAL_SETS = ("demo-eval-seen-voices.jsonl", "demo-eval-held-out-voice.jsonl", "demo-eval-everyday.jsonl")


@pytest.fixture(scope="module")
def demo(loop_thread: LoopThread, demo_engine: NemoEngine) -> Iterator[Served]:
    served = start_server(loop_thread, demo_engine, model_id="demo", wyoming_port=free_port(), max_streams=4)
    yield served
    served.stop()


def pcm(path: Any, rate: int = RATE, channels: int = 1) -> bytes:
    """A file as interleaved 16-bit PCM at `rate`, its channel copied `channels` times."""
    audio, source_rate = sf.read(path, dtype="float32")
    audio = soxr.resample(audio, source_rate, rate) if rate != source_rate else audio
    return pcm16(np.repeat(audio[None], channels, axis=0))


def utterance(audio: bytes, rate: int = RATE, width: int = 2, channels: int = 1, chunk: int = CHUNK,
              **transcribe: Any) -> list[Eventable]:
    """transcribe, audio-start, the audio in chunks of whole frames, audio-stop."""
    frame = width * channels
    step = max(frame, chunk // frame * frame)
    return [Transcribe(**transcribe), AudioStart(rate=rate, width=width, channels=channels),
            *(AudioChunk(rate=rate, width=width, channels=channels, audio=audio[i:i + step])
              for i in range(0, len(audio), step)), AudioStop()]


class Peer:
    """One connection, through the library's client (its events carry the library's protocol version)."""

    def __init__(self, port: int) -> None:
        self.client = AsyncTcpClient("127.0.0.1", port)

    async def __aenter__(self) -> Peer:
        await self.client.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    async def send(self, *messages: Eventable, live: bool = False) -> None:
        """The events; with `live`, each audio-chunk when its audio has been spoken (as a microphone sends)."""
        for message in messages:
            await self.client.write_event(message.event())
            if live and isinstance(message, AudioChunk):
                await asyncio.sleep(len(message.audio) / (message.rate * message.width * message.channels))

    async def until(self, *types: str, timeout: float = 120) -> list[Event]:
        """Events up to and including the first of `types`."""
        events: list[Event] = []
        while True:
            event = await asyncio.wait_for(self.client.read_event(), timeout)
            assert event is not None, f"the connection closed after {[e.type for e in events]}"
            events.append(event)
            if event.type in types:
                return events


class RawPeer:
    """One connection written byte by byte: no protocol version unless given, and anything at all."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawPeer:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, *messages: Eventable | bytes, version: str | None = None) -> None:
        for message in messages:
            self.writer.write(message if isinstance(message, bytes) else frame(message.event(), version))
        await self.writer.drain()

    async def read(self, timeout: float = 60) -> Event | None:
        return await asyncio.wait_for(async_read_event(self.reader), timeout)

    async def close(self) -> None:
        self.writer.close()


def frame(event: Event, version: str | None = None) -> bytes:
    header: dict[str, Any] = {"type": event.type, "data": event.data}
    if version is not None:
        header["version"] = version
    if event.payload:
        header["payload_length"] = len(event.payload)
    return json.dumps(header).encode() + b"\n" + (event.payload or b"")


def texts(events: list[Event], kind: type[Transcript] | type[TranscriptChunk]) -> list[str]:
    return [kind.from_event(e).text for e in events if kind.is_type(e.type)]


def riva_transcript(served: Served, audio: bytes, rate: int = RATE) -> str:
    config = riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=rate,
                                           language_code="en-US", enable_automatic_punctuation=True)
    response = served.asr().offline_recognize(audio, config)
    return " ".join(r.alternatives[0].transcript for r in response.results if r.alternatives).strip()


def test_describe_answers_with_the_served_model_its_language_and_streaming(demo: Served, loop_thread: LoopThread
                                                                          ) -> None:
    async def describe() -> Info:
        async with Peer(demo.app.wyoming.port) as peer:
            await peer.send(Describe())
            return Info.from_event((await peer.until("info"))[-1])

    program = loop_thread.run(describe()).asr[0]
    assert (program.name, program.version, program.installed) == ("parakeet-serve", __version__, True)
    assert program.supports_transcript_streaming
    assert [(m.name, m.languages, m.installed) for m in program.models] == [("demo", ["en-US"], True)]


def test_the_evaluation_sets_over_16_connections_give_riva_recognize_s_words_and_are_batched(
    demo: Served, loop_thread: LoopThread
) -> None:
    entries = [e for name in EVAL_SETS for e in read_manifest(DEMO_EVAL / name)]
    clips = [pcm(e.audio) for e in entries]
    before = Scrape(demo.metrics_url)

    async def connection(share: list[int]) -> dict[int, str]:
        heard = {}
        async with Peer(demo.app.wyoming.port) as peer:  # several utterances on each connection
            for i in share:
                await peer.send(*utterance(clips[i], language="en-US"))
                heard[i] = texts(await peer.until("transcript-stop"), Transcript)[0]
        return heard

    async def all_connections() -> dict[int, str]:
        shares = await asyncio.gather(*(connection(list(range(n, len(clips), 16))) for n in range(16)))
        return {i: text for share in shares for i, text in share.items()}

    heard = loop_thread.run(all_connections(), timeout=900)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        expected = list(pool.map(lambda clip: riva_transcript(demo, clip), clips))
    differing = [(entries[i].audio.name, heard[i], expected[i]) for i in range(len(clips)) if heard[i] != expected[i]]
    assert not differing, f"{len(differing)} of {len(clips)} differ, e.g. {differing[:3]}"
    after = Scrape(demo.metrics_url)
    finished = (after.value("parakeet_requests_total", rpc="Wyoming", code="OK")
                - before.value("parakeet_requests_total", rpc="Wyoming", code="OK"))
    assert finished == len(clips)
    batches = after.value("parakeet_batch_size_count", kind="offline") - before.value(
        "parakeet_batch_size_count", kind="offline")
    single = after.value("parakeet_batch_size_bucket", kind="offline", le="1.0") - before.value(
        "parakeet_batch_size_bucket", kind="offline", le="1.0")
    assert single < batches, "every recognition ran alone: the connections were not batched"


def test_a_streaming_client_gets_settled_words_while_it_speaks_then_the_whole_transcript(
    demo: Served, loop_thread: LoopThread
) -> None:
    async def speak() -> tuple[list[Event], list[Event]]:
        async with Peer(demo.app.wyoming.port) as peer:
            *audio, stop = utterance(pcm(SAMPLE))
            await peer.send(*audio, live=True)
            before_stop = await peer.until("transcript-chunk")  # words arrive before the audio ends
            await peer.send(stop)
            return before_stop, before_stop + await peer.until("transcript-stop")

    before_stop, events = loop_thread.run(speak())
    assert [e.type for e in before_stop] == ["transcript-start", "transcript-chunk"]
    assert [e.type for e in events[-2:]] == ["transcript", "transcript-stop"]
    chunks, (transcript,) = texts(events, TranscriptChunk), texts(events, Transcript)
    assert transcript == SAMPLE_TEXT == riva_transcript(demo, pcm(SAMPLE))
    assert len(chunks) >= 3 and "".join(chunks) == transcript  # chunks add up to the transcript
    assert Transcript.from_event(events[-2]).language == "en-US"


def test_a_client_of_protocol_1_6_gets_only_the_transcript(demo: Served, loop_thread: LoopThread) -> None:
    async def speak() -> list[Event | None]:
        peer = await RawPeer.open(demo.app.wyoming.port)
        try:
            await peer.send(*utterance(pcm(SAMPLE)), Ping(text="after"), version="1.6.0")
            return [await peer.read(), await peer.read()]
        finally:
            await peer.close()

    transcript, pong = loop_thread.run(speak())
    assert transcript.type == "transcript" and Transcript.from_event(transcript).text == SAMPLE_TEXT
    assert pong.type == "pong" and pong.data["text"] == "after"


@pytest.mark.parametrize(("rate", "width", "channels"), [(8000, 2, 1), (48000, 2, 2), (22050, 4, 1), (16000, 1, 1)])
def test_any_rate_width_and_channel_count_is_heard_as_riva_hears_it(
    demo: Served, loop_thread: LoopThread, rate: int, width: int, channels: int
) -> None:
    samples = np.frombuffer(pcm(SAMPLE, rate, channels), "<i2").astype(np.int32)
    audio = {1: lambda s: ((s >> 8) + 128).astype(np.uint8), 2: lambda s: s.astype("<i2"),
             4: lambda s: (s << 16).astype("<i4")}[width](samples).tobytes()

    async def speak() -> str:
        async with Peer(demo.app.wyoming.port) as peer:
            await peer.send(*utterance(audio, rate, width, channels))
            return texts(await peer.until("transcript-stop"), Transcript)[0]

    expected = riva_transcript(demo, pcm(SAMPLE, rate, channels) if channels == 1 else pcm(SAMPLE, rate), rate)
    assert loop_thread.run(speak()) == expected
    if width != 1:  # 8-bit samples are noisier than any Riva client sends
        assert expected == SAMPLE_TEXT


def test_bad_events_get_error_events_and_the_connection_stays_usable(demo: Served, loop_thread: LoopThread
                                                                      ) -> None:
    good = pcm(SAMPLE)
    start = AudioStart(rate=RATE, width=2, channels=1)

    def chunk(audio: bytes, rate: int = RATE, width: int = 2) -> AudioChunk:
        return AudioChunk(rate=rate, width=width, channels=1, audio=audio)

    cases: list[tuple[str, list[Eventable | bytes], list[str]]] = [
        ("not JSON", [b"this is not json\n"], ["error:bad_event"]),
        ("no type", [b'{"data": {"text": "no type"}}\n'], ["error:bad_event"]),
        ("not an object", [b"[1, 2, 3]\n"], ["error:bad_event"]),
        ("an unknown type", [b'{"type": "synthesize", "data": {"text": "hi"}}\n'], ["error:unknown_event"]),
        ("an event only servers send", [Transcript(text="hello")], ["error:unknown_event"]),
        ("audio before audio-start", [chunk(good[:CHUNK])], ["error:no_audio_start"]),
        ("audio-stop before audio-start", [AudioStop()], ["error:no_audio_start"]),
        # an error ends its utterance: the rest of its audio, up to its audio-stop, is dropped unanswered
        ("a chunk without its format", [start, b'{"type": "audio-chunk", "data": {"rate": 16000}, '
                                        b'"payload_length": 2}\nxx', chunk(good[:CHUNK]), AudioStop()],
         ["error:invalid_request"]),
        ("a sample width of 3 bytes", [AudioStart(rate=RATE, width=3, channels=1), chunk(good[:CHUNK - 2], width=3),
                                       AudioStop()], ["error:invalid_audio"]),
        ("a chunk contradicting audio-start", [start, chunk(good[:CHUNK]), chunk(good[:CHUNK], rate=8000),
                                               chunk(good[:CHUNK]), AudioStop()], ["error:invalid_audio"]),
        ("half a frame", [start, chunk(good[:CHUNK - 1]), AudioStop()], ["error:invalid_audio"]),
        ("no audio at all", [start, AudioStop()], ["error:invalid_audio"]),
        ("a model not served", [Transcribe(name="whisper-large"), start, chunk(good[:CHUNK]), AudioStop()],
         ["error:unknown_model"]),
        ("a language not served", [Transcribe(language="de-DE"), start, AudioStop()], ["error:unknown_model"]),
        ("then a good utterance", utterance(good), ["transcript:"]),
    ]

    async def misbehave() -> dict[str, list[str]]:
        peer = await RawPeer.open(demo.app.wyoming.port)
        answers: dict[str, list[str]] = {}
        try:
            for name, messages, _ in cases:
                await peer.send(*messages, Ping(text=name))  # the pong marks where the case's answers end
                answers[name] = []
                while (event := await peer.read()) is not None and event.type != "pong":
                    answers[name].append(f"{event.type}:{event.data.get('code', '')}")
                assert event is not None, f"the connection closed after {name}"
            return answers
        finally:
            await peer.close()

    answers = loop_thread.run(misbehave())
    assert answers == {name: expected for name, _, expected in cases}


def test_more_audio_than_an_utterance_may_hold_is_refused_and_the_next_utterance_is_heard(
    loop_thread: LoopThread, demo_engine: NemoEngine
) -> None:
    served = start_server(loop_thread, demo_engine, model_id="demo", wyoming_port=free_port(), max_audio_seconds=2)
    try:
        async def speak() -> list[list[str]]:
            async with Peer(served.app.wyoming.port) as peer:
                answers = []
                for audio in (pcm(SAMPLE) * 2, pcm(SAMPLE)[:RATE * 2]):  # over 2 s, then under
                    await peer.send(*utterance(audio), Ping())
                    answers.append([e.data.get("code") or e.type for e in await peer.until("pong")])
                return answers

        too_long, heard = loop_thread.run(speak())
        assert too_long[-2:] == ["invalid_request", "pong"] and "transcript" not in too_long
        assert heard[-3:] == ["transcript", "transcript-stop", "pong"]
    finally:
        served.stop()


def test_framing_past_the_limits_gets_an_error_and_closes_only_that_connection(
    loop_thread: LoopThread, demo_engine: NemoEngine
) -> None:
    served = start_server(loop_thread, demo_engine, model_id="demo", wyoming_port=free_port(), max_upload_mb=1,
                          stream_idle_timeout_s=1)
    port = served.app.wyoming.port
    try:
        async def lost(*sent: bytes) -> tuple[Event | None, Event | None]:
            peer = await RawPeer.open(port)
            try:
                await peer.send(*sent)
                return await peer.read(), await peer.read()
            finally:
                await peer.close()

        async def all_cases() -> list[tuple[Event | None, Event | None]]:
            bystander = await RawPeer.open(port)  # another client mid-utterance keeps its audio
            await bystander.send(*utterance(pcm(SAMPLE))[:-1])
            cases = [
                await lost(b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, '
                           b'"payload_length": 2097152}\n'),  # 2 MiB announced: refused before it is read
                await lost(b'{"type": "describe", "data_length": 1e12}\n'),
                await lost(b'{"type": "describe", "pad": "' + b"x" * 70000),  # a header line past 64 KiB
            ]
            await bystander.send(AudioStop())
            heard = await bystander.read()
            await bystander.close()
            cases.append(await lost(b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, '
                                    b'"payload_length": 1000}\n' + b"\0" * 10))  # the payload stops coming
            return [*cases, (heard, None)]

        *refused, (bystander, _) = loop_thread.run(all_cases())
        for error, after in refused:
            assert error.type == "error" and error.data["code"] == "bad_framing", error
            assert after is None  # closed
        assert "2097152 bytes" in refused[0][0].data["text"] and "PARAKEET_MAX_UPLOAD_MB" in refused[0][0].data["text"]
        assert "64 KiB" in refused[2][0].data["text"] and "stopped arriving" in refused[3][0].data["text"]
        assert Transcript.from_event(bystander).text == SAMPLE_TEXT
    finally:
        served.stop()


def test_an_utterance_that_never_stops_is_ended_at_the_idle_timeout_and_its_stream_freed(
    loop_thread: LoopThread, demo_engine: NemoEngine
) -> None:
    served = start_server(loop_thread, demo_engine, model_id="demo", wyoming_port=free_port(),
                          stream_idle_timeout_s=1)
    try:
        async def stall() -> tuple[list[Event], float, int, Event | None]:
            async with Peer(served.app.wyoming.port) as peer:
                await peer.send(*utterance(pcm(SAMPLE)[:RATE * 2])[:-1])  # no audio-stop
                began = time.monotonic()
                events = await peer.until("error", timeout=10)
                streams = served.app._scheduler.active_streams
                return events, time.monotonic() - began, streams, await peer.client.read_event()

        events, waited, streams, after = loop_thread.run(stall())
        assert events[-1].data["code"] == "idle_timeout" and "PARAKEET_STREAM_IDLE_TIMEOUT_S" in events[-1].data["text"]
        assert 0.5 < waited < 5 and streams == 0
        assert after is None  # idle once more with nothing under way: closed
        scrape = Scrape(served.metrics_url)
        assert scrape.value("parakeet_requests_total", rpc="Wyoming", code="OUT_OF_RANGE") == 1
    finally:
        served.stop()


def test_a_recording_sent_at_once_costs_no_stream_and_gets_its_words_in_one_chunk(demo: Served,
                                                                                    loop_thread: LoopThread) -> None:
    async def send_at_once() -> tuple[int, list[Event]]:
        async with Peer(demo.app.wyoming.port) as peer:
            *audio, stop = utterance(pcm(SAMPLE) * 3)  # 9 s, far ahead of the clock
            await peer.send(*audio)
            await asyncio.sleep(0.6)  # past the time a live utterance's stream opens
            await peer.send(Ping())
            await peer.until("pong")
            streams = demo.app._scheduler.active_streams
            await peer.send(stop)
            return streams, await peer.until("transcript-stop")

    streams, events = loop_thread.run(send_at_once())
    assert streams == 0
    assert [e.type for e in events] == ["transcript-start", "transcript-chunk", "transcript", "transcript-stop"]
    transcript = riva_transcript(demo, pcm(SAMPLE) * 3)
    assert texts(events, Transcript) == texts(events, TranscriptChunk) == [transcript]


def test_a_client_that_vanishes_mid_utterance_frees_its_stream(demo: Served, loop_thread: LoopThread) -> None:
    before = Scrape(demo.metrics_url).value("parakeet_requests_total", rpc="Wyoming", code="CANCELLED")

    async def vanish() -> int:
        async with Peer(demo.app.wyoming.port) as peer:
            await peer.send(*utterance(pcm(SAMPLE))[:-1], live=True)
            await peer.until("transcript-chunk")
            return demo.app._scheduler.active_streams

    assert loop_thread.run(vanish()) == 1
    poll(lambda: demo.app._scheduler.active_streams == 0)
    poll(lambda: Scrape(demo.metrics_url).value("parakeet_requests_total", rpc="Wyoming", code="CANCELLED")
         == before + 1)


def test_a_full_queue_and_a_loading_model_are_clear_error_events(loop_thread: LoopThread, held: HeldEngine,
                                                                   engine: NemoEngine) -> None:
    served, first = busy_server(loop_thread, held, wyoming_port=free_port())
    loading = start_server(loop_thread, engine, load=False, wyoming_port=free_port())
    try:
        second = served.asr().offline_recognize(pcm(SAMPLE), riva.client.RecognitionConfig(
            encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=RATE, language_code="en-US"),
            future=True)
        poll(lambda: served.app.queue_depth == 1)

        async def ask(port: int, *messages: Eventable) -> Event:
            peer = await RawPeer.open(port)  # of protocol 1.6: no interim stream, which the held worker would stall
            try:
                await peer.send(*messages, version="1.6.0")
                return await peer.read()
            finally:
                await peer.close()

        busy = loop_thread.run(ask(served.app.wyoming.port, *utterance(pcm(SAMPLE))))
        assert busy.data["code"] == "busy" and "retry" in busy.data["text"]
        not_ready = loop_thread.run(ask(loading.app.wyoming.port, Describe()))
        assert not_ready.data == {"text": "The model is still loading; retry shortly.", "code": "not_ready"}
        held.gate.set()
        assert first.result(60).results and second.result(60).results
    finally:
        held.gate.set()
        served.stop()
        loading.stop()


@pytest.fixture
def held(engine: NemoEngine) -> HeldEngine:
    return HeldEngine(engine)


def test_the_server_announces_itself_for_home_assistant_to_discover(serve: Any, loop_thread: LoopThread,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    with caplog.at_level(logging.INFO):
        served = serve(wyoming_port=free_port(), wyoming_zeroconf="parakeet-test")
    (announced,) = [r for r in caplog.records if r.getMessage() == "wyoming server announced"]
    assert announced.announced_as == "parakeet-test" and announced.port == served.app.wyoming.port

    async def discover() -> tuple[bool, int | None]:
        zeroconf = AsyncZeroconf()
        try:
            info = AsyncServiceInfo("_wyoming._tcp.local.", "parakeet-test._wyoming._tcp.local.")
            return await info.async_request(zeroconf.zeroconf, 5000), info.port
        finally:
            await zeroconf.async_close()

    assert loop_thread.run(discover()) == (True, served.app.wyoming.port)


def test_each_utterance_is_one_server_span_holding_its_recognition(serve: Any, loop_thread: LoopThread) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    served = serve(telemetry=Telemetry(tracer=provider.get_tracer("test"), provider=provider),
                   wyoming_port=free_port())

    async def speak() -> None:
        async with Peer(served.app.wyoming.port) as peer:
            for _ in range(2):
                await peer.send(*utterance(pcm(SAMPLE)))
                await peer.until("transcript-stop")

    loop_thread.run(speak())
    spans = exporter.get_finished_spans()
    utterances = [s for s in spans if s.name == "Wyoming"]
    assert len(utterances) == 2 and all(s.kind == SpanKind.SERVER for s in utterances)
    assert utterances[0].attributes["request.id"] != utterances[1].attributes["request.id"]
    for span in utterances:
        assert span.attributes["audio_s"] == pytest.approx(len(pcm(SAMPLE)) / 2 / RATE, abs=0.01)
        inside = {s.name for s in spans if s.parent is not None and s.parent.span_id == span.context.span_id}
        assert "audio.decode" in inside, inside


def test_a_drain_closes_idle_connections_refuses_new_ones_and_lets_an_utterance_finish(
    loop_thread: LoopThread, demo_engine: NemoEngine
) -> None:
    served = start_server(loop_thread, demo_engine, model_id="demo", wyoming_port=free_port(), shutdown_grace_s=10)
    port = served.app.wyoming.port
    idle, speaking = loop_thread.run(RawPeer.open(port)), loop_thread.run(RawPeer.open(port))
    *audio, stop = utterance(pcm(SAMPLE))

    async def begin() -> None:
        await idle.send(Describe(), version="1.6.0")
        assert (await idle.read()).type == "info"
        await speaking.send(*audio, Ping(), version="1.6.0")
        assert (await speaking.read()).type == "pong"  # its audio is in

    loop_thread.run(begin())
    draining = loop_thread.submit(served.app.drain())
    assert loop_thread.run(idle.read(10)) is None  # closed at once
    with pytest.raises(OSError):
        loop_thread.run(RawPeer.open(port))
    loop_thread.run(speaking.send(stop, version="1.6.0"))
    heard = loop_thread.run(speaking.read(30))
    assert Transcript.from_event(heard).text == SAMPLE_TEXT
    assert loop_thread.run(speaking.read(10)) is None  # and then closed, not held until the grace ends
    draining.result(5)
    loop_thread.run(speaking.close())
