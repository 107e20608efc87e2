"""One Wyoming connection: its events read within limits, its utterances recognised, its answers written.

An utterance is `transcribe` (optional), `audio-start`, `audio-chunk`s and `audio-stop`; its `transcript` is the
whole audio recognised as `Recognize` recognises it. A client of protocol 1.7 or later also gets the words as they
settle: `transcript-start`, then `transcript-chunk`s that each add to the text (from a stream of the audio, while
the server has a stream free), and after `audio-stop` the rest of the text as a last chunk, the `transcript` and
`transcript-stop`. A bad event gets an `error` event and the connection stays open; an error during an utterance
ends it (its audio is dropped until `audio-stop`). Only a lost framing (a header line or an event's data over
the limits, or data that stops arriving) closes the connection, after its error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event, Eventable, async_read_event, async_write_event
from wyoming.ping import Ping, Pong

from parakeet_serve.audio import AudioFormat
from parakeet_serve.errors import InvalidAudio, InvalidRequest, ParakeetError, QueueFull, StreamIdle, quote
from parakeet_serve.recognizer import RecognitionOptions, Recognizer
from parakeet_serve.session import StreamEvent, StreamOptions, StreamSession
from parakeet_serve.telemetry import Telemetry
from parakeet_serve.telemetry.metrics import WYOMING as RPC
from parakeet_serve.usage import Usage
from parakeet_serve.wyoming import convert
from parakeet_serve.wyoming.errors import Refusal, bad_event, refusal_for

log = logging.getLogger(__name__)

HEADER_LIMIT = 64 * 1024  # an event's header line, as asyncio reads lines by default
NO_ENDPOINTS_S = 3600.0  # the interim stream has no endpointing of its own: audio-stop ends the utterance
# Interim text is for a client speaking live: its stream opens once the utterance has gone on LIVE_AFTER_S with
# the audio no further ahead of the clock than LIVE_LEAD_S (a satellite's buffered pre-roll stays within it), and
# closes if the audio runs further ahead. A recording sent at once never costs a stream: its words would all come
# at once anyway, and the transcript would wait for every step of them.
LIVE_AFTER_S, LIVE_LEAD_S = 0.5, 1.5
E = TypeVar("E", bound=Eventable)


@dataclass(frozen=True)
class WyomingLimits:
    max_bytes: int  # one event's data or payload, and one utterance's audio (as 16-bit samples)
    idle_s: float  # nothing received this long: an open utterance is ended, an idle connection closed (0: never)


class _Unframed(Exception):
    """Where the next event begins is no longer known: the connection must close."""


class _Reader:
    """The connection's reader as `wyoming.event.async_read_event` reads it, refusing an event's data or payload
    over the limit before any of it is read, and keeping each header line (its `version`) and whether an event
    is half read."""

    def __init__(self, reader: asyncio.StreamReader, max_bytes: int) -> None:
        self._reader, self._max_bytes = reader, max_bytes
        self.header = b""
        self.mid_event = False

    async def readline(self) -> bytes:
        try:
            line = await self._reader.readline()
        except ValueError:  # asyncio's line limit
            raise _Unframed(f"An event's header line is longer than {HEADER_LIMIT // 1024} KiB.") from None
        self.header, self.mid_event = line, bool(line)
        return line

    async def readexactly(self, n: Any) -> bytes:
        if not isinstance(n, int):
            raise _Unframed("An event's data_length and payload_length must be whole numbers.")
        if n > self._max_bytes:
            raise _Unframed(f"An event carries {n} bytes of data or payload, more than the {self._max_bytes} "
                            "this server takes at once (PARAKEET_MAX_UPLOAD_MB).")
        return await self._reader.readexactly(n)

    def at_eof(self) -> bool:
        return self._reader.at_eof()


@dataclass
class _Call:
    """One utterance, for its span, metrics and log line."""

    span: Any
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    usage: Usage = field(default_factory=Usage)
    stopped: float = 0.0  # when audio-stop arrived
    chunks: int = 0  # transcript-chunk events sent


@dataclass(frozen=True)
class _Request:
    """What a `transcribe` asked for, kept for the `audio-start` that follows it."""

    options: RecognitionOptions
    streams_to: bool  # the client takes transcript-start, -chunk and -stop
    refused: bool = False  # its error was sent: the utterance that follows is dropped unanswered


@dataclass
class _Utterance:
    recognizer: Recognizer
    fmt: AudioFormat
    width: int
    options: RecognitionOptions
    streams_to: bool  # the client takes transcript-start, -chunk and -stop
    call: _Call
    audio: bytearray = field(default_factory=bytearray)  # 16-bit samples as they came
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # holds the interim stream's slot
    session: StreamSession | None = None
    finals: list[str] = field(default_factory=list)  # the interim stream's ended stretches (long utterances)
    said: str = ""  # the text the chunks sent add up to
    started: bool = False  # transcript-start sent
    began: float = field(default_factory=time.monotonic)  # when audio-start arrived
    wants_stream: bool = False  # interim text would reach the client: a stream opens while the audio is live

    @property
    def audio_s(self) -> float:
        return len(self.audio) / (2 * self.fmt.sample_rate * self.fmt.channels)

    def live(self) -> bool:
        """The client sends its audio about as fast as it is spoken."""
        return self.audio_s <= time.monotonic() - self.began + LIVE_LEAD_S


class Connection:
    """A client's events in order: each handled before the next is read, so a slow answer holds its sender back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 recognizer: Callable[[], Recognizer], telemetry: Telemetry, limits: WyomingLimits) -> None:
        self._reader = _Reader(reader, limits.max_bytes)
        self._writer = writer
        self._recognizer = recognizer
        self._telemetry = telemetry
        self._limits = limits
        self._next: _Request | None = None  # a transcribe's, awaiting audio-start
        self._utterance: _Utterance | None = None
        self._refused = False  # the utterance under way was refused: its audio is dropped until audio-stop
        self._peer = str(writer.get_extra_info("peername"))
        self._utterances = self._errors = 0
        self.closing = False  # the server is draining: the connection ends once no utterance is under way
        self._handlers: dict[str, Callable[[Event], Awaitable[None]]] = {
            "describe": self._describe, "transcribe": self._transcribe, "audio-start": self._audio_start,
            "audio-chunk": self._audio_chunk, "audio-stop": self._audio_stop, "ping": self._ping}

    @property
    def busy(self) -> bool:
        """An utterance is under way (a drain lets it finish)."""
        return self._utterance is not None

    async def run(self) -> None:
        outcome = "closed"
        try:
            while not (self.closing and not self.busy) and (event := await self._read()) is not None:
                await self._handle(event)
        except _Unframed as exc:
            outcome = "unframed"
            self._drop("INVALID_ARGUMENT", str(exc))
            with contextlib.suppress(ConnectionError, TimeoutError):
                await self._refuse(bad_event("bad_framing", str(exc)))
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            outcome = "client left"  # or stopped reading: a write waited out the idle timeout
        finally:
            self._drop("CANCELLED")
            self._writer.close()
            log.info("wyoming connection closed", extra={"peer": self._peer, "outcome": outcome,
                                                         "utterances": self._utterances, "errors": self._errors})

    async def _read(self) -> Event | None:
        """The next event; None when the client closed or the connection idled out."""
        while True:
            try:
                event = await asyncio.wait_for(async_read_event(self._reader), self._limits.idle_s or None)
            except TimeoutError:
                if self._reader.mid_event:
                    raise _Unframed(f"An event's data stopped arriving for {self._limits.idle_s:g} s.") from None
                if self._utterance is None:
                    return None  # an idle connection is closed; a client reconnects when it has audio
                await self._fail(StreamIdle(self._limits.idle_s))
                continue
            except (KeyError, TypeError, AttributeError):  # JSON, but not an event's header
                event = None
            self._reader.mid_event = False
            if event is not None:
                return event
            if self._reader.at_eof():
                return None
            await self._refuse(bad_event("bad_event", "An event's header must be one line of JSON: an object with "
                                                      "its type, and its data and payload lengths."))

    async def _handle(self, event: Event) -> None:
        handler = self._handlers.get(event.type) if isinstance(event.type, str) else None
        if handler is None:
            return await self._refuse(bad_event("unknown_event", f"This server takes {', '.join(self._handlers)} "
                                                                 f"events, not {quote(str(event.type))}."))
        try:
            await handler(event)
        except (ConnectionError, TimeoutError):
            raise
        except Exception as exc:  # a bad request, or the engine's or this server's failure: the connection lives
            if not isinstance(exc, ParakeetError):
                request_id = self._utterance.call.request_id if self._utterance else None
                log.exception("wyoming event failed", extra={"rpc": RPC, "peer": self._peer, "event": event.type,
                                                             "request_id": request_id})
            await self._fail(exc, audio_follows=not AudioStop.is_type(event.type))

    async def _describe(self, event: Event) -> None:
        await self._write(convert.info(self._recognizer()))

    async def _ping(self, event: Event) -> None:
        await self._write(Pong(text=_parse(Ping, event).text))

    async def _transcribe(self, event: Event) -> None:
        self._drop("CANCELLED")  # a new request replaces one under way
        self._refused = False
        self._next = _Request(RecognitionOptions(), False, refused=True)  # until it is found good
        options = convert.recognition_options(_parse(Transcribe, event))
        self._recognizer().check_model(options)
        self._next = _Request(options, convert.streams_to(self._reader.header))

    async def _audio_start(self, event: Event) -> None:
        self._drop("CANCELLED")
        request = self._next or _Request(convert.recognition_options(Transcribe()),
                                         convert.streams_to(self._reader.header))
        self._next, self._refused = None, True  # until the utterance is open, its audio is dropped
        if request.refused:
            return
        recognizer = self._recognizer()
        fmt, width = convert.audio_format(_parse(AudioStart, event))
        recognizer.check_model(request.options)
        span = self._telemetry.tracer.start_span(RPC, kind=SpanKind.SERVER)
        u = self._utterance = _Utterance(recognizer, fmt, width, request.options, request.streams_to, _Call(span))
        u.wants_stream = u.streams_to and recognizer.streams
        self._refused = False

    async def _follow_live(self, u: _Utterance, pcm: bytes) -> None:
        """Feed the interim stream while the audio is live: open it (with the audio so far) once the utterance has
        shown it is, close it once it is not."""
        if u.session is None and u.wants_stream and time.monotonic() - u.began >= LIVE_AFTER_S:
            u.wants_stream = False  # one try
            if u.live() and self._open_stream(u):
                pcm = bytes(u.audio)
        elif u.session is not None and not u.live():
            u.stack.close()
            u.session = None
        if u.session is not None:
            with trace.use_span(u.call.span, end_on_exit=False):  # its steps' spans are the utterance's
                async for result in u.session.push(pcm):
                    await self._interim(u, result)

    def _open_stream(self, u: _Utterance) -> bool:
        stream = StreamOptions(interim_results=True, automatic_punctuation=True, stop_history_s=NO_ENDPOINTS_S)
        try:
            u.session = u.stack.enter_context(u.recognizer.stream(u.fmt, u.options, stream))
        except QueueFull as exc:  # the transcript still comes at audio-stop, only without chunks before it
            log.info("no interim text: no stream free", extra={"rpc": RPC, "request_id": u.call.request_id,
                                                               "reason": str(exc)})
        return u.session is not None

    async def _audio_chunk(self, event: Event) -> None:
        if self._refused:
            return
        u = self._utterance
        if u is None:
            return await self._refuse(bad_event("no_audio_start", "An audio-chunk came before audio-start."))
        chunk = _parse(AudioChunk, event)
        if (chunk.rate, chunk.width, chunk.channels) != (u.fmt.sample_rate, u.width, u.fmt.channels):
            raise InvalidAudio(f"An audio-chunk of {chunk.rate} Hz, {chunk.width}-byte samples and {chunk.channels} "
                               f"channel(s) contradicts its audio-start ({u.fmt.sample_rate} Hz, {u.width}, "
                               f"{u.fmt.channels}).")
        pcm = convert.pcm16(chunk.audio or b"", u.width, u.fmt.channels)
        u.audio += pcm
        self._check_room(u)
        await self._follow_live(u, pcm)

    def _check_room(self, u: _Utterance) -> None:
        limit_s = u.recognizer.max_audio_seconds
        if len(u.audio) > self._limits.max_bytes or u.audio_s > limit_s:
            raise InvalidRequest(f"The utterance passed {min(u.audio_s, limit_s):.0f} s of audio "
                                 f"({len(u.audio)} bytes), more than this server takes in one ({limit_s:g} s, "
                                 f"PARAKEET_MAX_AUDIO_SECONDS; {self._limits.max_bytes} bytes, "
                                 "PARAKEET_MAX_UPLOAD_MB).")

    async def _interim(self, u: _Utterance, result: StreamEvent) -> None:
        """Send the words that settled: all but the last one heard, which may still change."""
        heard = " ".join([*u.finals, result.hypothesis.text]).strip()
        if result.final:
            u.finals.append(result.hypothesis.text)
            settled = heard
        else:
            settled = heard.rsplit(" ", 1)[0] if " " in heard else ""
        await self._extend(u, settled)

    async def _extend(self, u: _Utterance, text: str) -> None:
        """A transcript-chunk with what `text` adds to the chunks so far, if it adds to them."""
        if not text.startswith(u.said) or len(text) == len(u.said):
            return
        await self._start(u)
        await self._write(TranscriptChunk(text=text[len(u.said):]))
        u.said = text
        u.call.chunks += 1

    async def _start(self, u: _Utterance) -> None:
        """`transcript-start`, once an utterance."""
        if not u.started:
            await self._write(TranscriptStart(language=u.recognizer.language_code))
            u.started = True

    async def _audio_stop(self, event: Event) -> None:
        if self._refused:
            self._refused = False
            return
        u = self._utterance
        if u is None:
            return await self._refuse(bad_event("no_audio_start", "An audio-stop came before audio-start."))
        u.call.stopped = time.monotonic()
        u.stack.close()  # the interim stream's slot is free before the recognition queues
        with trace.use_span(u.call.span, end_on_exit=False):
            results = await u.recognizer.transcribe(bytes(u.audio), u.fmt, u.options, u.call.usage, rpc=RPC)
        hypotheses = results[0].hypotheses if results else ()
        text = hypotheses[0].text if hypotheses else ""
        if u.streams_to:
            await self._start(u)
            await self._extend(u, text)
        await self._write(Transcript(text=text, language=u.recognizer.language_code))
        if u.streams_to:
            await self._write(TranscriptStop())
        self._utterances += 1
        self._drop("OK")

    async def _fail(self, exc: Exception, audio_follows: bool = True) -> None:
        """The error's event; an utterance under way ends with it (the rest of its audio, when more is to come,
        is dropped until its audio-stop)."""
        refusal = refusal_for(exc)
        self._telemetry.metrics.count_rejection(exc)
        if self._utterance is not None:
            self._refused = audio_follows
        self._drop(refusal.status, refusal.message)
        await self._refuse(refusal)

    async def _refuse(self, refusal: Refusal) -> None:
        self._errors += 1
        log.info("wyoming event refused", extra={"rpc": RPC, "peer": self._peer, "code": refusal.code,
                                                  "reason": refusal.message})
        await self._write(refusal.event())

    def _drop(self, status: str, reason: str = "") -> None:
        """End the utterance under way (if any): its stream's slot freed, its audio let go, its call recorded."""
        u, self._utterance = self._utterance, None
        if u is None:
            return
        u.stack.close()
        _record(self._telemetry, u, status, reason)

    async def _write(self, message: Eventable) -> None:
        """Send an event; a client that reads nothing for the idle timeout is dropped (`TimeoutError`)."""
        await asyncio.wait_for(async_write_event(message.event(), self._writer), self._limits.idle_s or None)


def _parse(kind: type[E], event: Event) -> E:
    """An event's fields (`InvalidRequest` naming the one missing or malformed)."""
    try:
        return kind.from_event(event)  # type: ignore[return-value]
    except KeyError as exc:
        raise InvalidRequest(f"A {event.type} event needs its {exc.args[0]!r} field.") from None
    except (TypeError, ValueError, AttributeError):
        raise InvalidRequest(f"A {event.type} event's fields are malformed.") from None


def _record(telemetry: Telemetry, u: _Utterance, status: str, reason: str) -> None:
    """One utterance in the metrics, its span and one log line, as each gRPC call is."""
    metrics, call, usage = telemetry.metrics, u.call, u.call.usage
    elapsed = time.monotonic() - call.stopped if call.stopped else None  # from audio-stop to the transcript
    rtf = usage.compute_s / usage.audio_s if usage.audio_s else None
    metrics.requests.labels(RPC, status).inc()
    if status == "OK" and elapsed is not None:
        metrics.request_duration.labels(RPC).observe(elapsed)
        if rtf is not None:
            metrics.real_time_factor.labels(RPC).observe(rtf)
    figures = {"audio_s": round(usage.audio_s, 3), "queue_wait_s": round(usage.queue_wait_s, 4),
               "rtf": round(rtf, 4) if rtf is not None else None}
    call.span.set_attributes({"request.id": call.request_id, **{k: v for k, v in figures.items() if v is not None}})
    if status != "OK":
        call.span.set_status(Status(StatusCode.ERROR, status))
    call.span.end()
    log.info("request finished", extra={
        "rpc": RPC, "request_id": call.request_id, "code": status,
        "elapsed_s": round(elapsed, 4) if elapsed is not None else None, **figures, "chunks": call.chunks,
        "audio_bytes": len(u.audio), **({"reason": reason} if reason else {})})
