"""`GET /v1/realtime` (WebSocket): OpenAI's realtime transcription events over the streaming core.

Both dialects: the current one (`session.update` with `session.type = "transcription"` and
`session.audio.input.{format,turn_detection}`) and the earlier one (`transcription_session.update` with
`input_audio_format` and `turn_detection`). One socket is one stream for admission control. Server VAD
is the core's endpointing (`silence_duration_ms` is its stop history); with `turn_detection: null` the
client's `input_audio_buffer.commit` ends an utterance. A bad event gets an `error` event, never a
dropped socket.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from parakeet_serve.audio import AudioFormat, Encoding
from parakeet_serve.errors import InvalidRequest, ParakeetError, StreamIdle
from parakeet_serve.http import realtime_events as events
from parakeet_serve.http.errors import describe
from parakeet_serve.http.prompt import prompt_contexts
from parakeet_serve.recognizer import RecognitionOptions, Recognizer
from parakeet_serve.session import StreamEvent, StreamOptions, StreamSession

log = logging.getLogger(__name__)

# OpenAI's names for audio formats, in both dialects: (encoding, sample rate)
FORMATS = {
    "audio/pcm": (Encoding.LINEAR_PCM, 24000), "pcm16": (Encoding.LINEAR_PCM, 24000),
    "audio/pcmu": (Encoding.MULAW, 8000), "g711_ulaw": (Encoding.MULAW, 8000),
    "audio/pcma": (Encoding.ALAW, 8000), "g711_alaw": (Encoding.ALAW, 8000),
}
MIN_COMMIT_S = 0.1  # as OpenAI's API: a shorter buffer is refused as empty
MIB = 1024 * 1024
MAX_QUEUED = 1024  # events read and not yet handled; the reader waits for room past this


@dataclass
class _Config:
    format: str = "pcm16"
    server_vad: bool = True
    silence_ms: float = events.DEFAULT_SILENCE_MS
    legacy: bool = False  # the earlier `transcription_session.*` dialect
    prompt: str = ""  # the transcription's prompt: its phrases are boosted

    def session(self, model: str) -> dict[str, Any]:
        turn = {"type": "server_vad", "silence_duration_ms": self.silence_ms} if self.server_vad else None
        if self.legacy:
            return {"object": "realtime.transcription_session", "input_audio_format": self.format,
                    "input_audio_transcription": {"model": model, "prompt": self.prompt}, "turn_detection": turn}
        encoding, rate = FORMATS[self.format]
        fmt = {"type": self.format if self.format.startswith("audio/") else "audio/pcm"}
        if encoding is Encoding.LINEAR_PCM:
            fmt["rate"] = rate
        return {"type": "transcription", "object": "realtime.session",
                "audio": {"input": {"format": fmt, "transcription": {"model": model, "prompt": self.prompt},
                                    "turn_detection": turn}}}


@dataclass
class _Tally:
    """What a session did, for its one log line (as each gRPC call and HTTP request has)."""

    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    began: float = field(default_factory=time.monotonic)
    audio_s: float = 0.0
    utterances: int = 0
    errors: int = 0  # error events sent

    def log(self, outcome: str) -> None:
        log.info("realtime session finished", extra={
            "route": "/v1/realtime", "session_id": self.session_id, "outcome": outcome,
            "elapsed_s": round(time.monotonic() - self.began, 3), "audio_s": round(self.audio_s, 3),
            "utterances": self.utterances, "errors": self.errors})


@dataclass(frozen=True)
class RealtimeLimits:
    idle_s: float  # a stream that hears nothing this long is ended; 0 never
    buffer_bytes: int  # audio one socket holds not yet transcribed

    @property
    def max_message_bytes(self) -> int:
        """The socket's own limit on a message: an append over the buffer's limit is refused with an error
        event, so only a message of over 16 MiB, or a little more than that limit's base64, closes the socket."""
        return max(16 * MIB, self.buffer_bytes * 4 // 3 + 64 * 1024)


class _Idle:
    """The socket heard nothing for the idle timeout while its stream had nothing left to do."""


class RealtimeTranscription:
    """One socket: its settings, its current stream and its items.

    A reader takes the socket's events as they come (so pings are answered and the socket never stalls while
    audio is transcribed) and queues them, bounded by the audio they carry; a worker handles them in order.
    """

    def __init__(self, websocket: WebSocket, recognizer: Recognizer, limits: RealtimeLimits) -> None:
        self._ws, self._recognizer, self._limits = websocket, recognizer, limits
        self._config = _Config()
        self._stream: contextlib.ExitStack | None = None
        self._session: StreamSession | None = None
        self._events = itertools.count(1)
        self._items = itertools.count(1)
        self._item: str | None = None  # the utterance being heard
        self._previous_item: str | None = None
        self._said = ""  # what the deltas of the current item have added up to
        self._buffered_s = 0.0  # audio appended to the current stream
        self._inbox: asyncio.Queue[events.ClientEvent | events.BadEvent | _Idle] = asyncio.Queue(MAX_QUEUED)
        self._backlog = 0  # bytes of appended audio queued or being transcribed
        self._busy = False  # the worker is handling an event
        self._tally = _Tally()

    async def run(self) -> None:
        await self._send("session.created", session=self._config.session(self._recognizer.model_name))
        tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._work())]
        outcome = "closed"
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # the worker fails only with the socket
        except WebSocketDisconnect:
            pass
        except BaseException as exc:
            outcome = f"failed: {type(exc).__name__}"
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._close_stream()
            self._tally.log(outcome)

    async def _read(self) -> None:
        """Queue each event as it arrives; an append past the buffer's limit is queued as its refusal instead,
        so its audio is never held (the refusal is sent in its turn, after the events before it)."""
        while (message := await self._receive())["type"] != "websocket.disconnect":
            if message.get("text") is None:
                await self._inbox.put(events.BadEvent("invalid_json", "Events are JSON text frames, not binary."))
                continue
            try:
                event: events.ClientEvent | events.BadEvent = events.parse(message["text"])
            except events.BadEvent as bad:
                event = bad
            if isinstance(event, events.Append):
                size = _decoded_size(event)
                if self._backlog + size > self._limits.buffer_bytes:
                    event = events.BadEvent("input_audio_buffer_full", (
                        f"This append's {size / MIB:.1f} MiB of audio would take the socket past its "
                        f"{self._limits.buffer_bytes / MIB:g} MiB of audio not yet transcribed; send less at once."),
                        event.event_id, "audio")
                else:
                    self._backlog += size
            await self._inbox.put(event)

    async def _receive(self) -> dict[str, Any]:
        """The next message. A stream that gets none for the idle timeout, with all it was sent handled, is
        ended, freeing its slot (the socket stays open, and its next audio starts a new stream)."""
        while True:
            try:
                return await asyncio.wait_for(self._ws.receive(), self._limits.idle_s or None)
            except TimeoutError:
                if self._session is not None and self._inbox.empty() and not self._busy:
                    await self._inbox.put(_Idle())

    async def _work(self) -> None:
        while True:
            event = await self._inbox.get()
            self._busy = True
            try:
                await self._handle(event)
            finally:
                self._busy = False

    async def _handle(self, event: events.ClientEvent | events.BadEvent | _Idle) -> None:
        if isinstance(event, _Idle):
            return await self._idle()
        if isinstance(event, events.BadEvent):
            return await self._error(event.code, str(event), event.event_id, event.param)
        handler = {events.SessionUpdate: self._update, events.LegacySessionUpdate: self._update,
                   events.Append: self._append, events.Commit: self._commit, events.Clear: self._clear}[type(event)]
        try:
            await handler(event)
        except WebSocketDisconnect:
            raise
        except Exception as exc:  # the HTTP API's table: a full server is a rate limit, not a bad request
            if not isinstance(exc, ParakeetError):
                log.exception("realtime event failed", extra={"route": "/v1/realtime",
                                                              "session_id": self._tally.session_id})
            if not isinstance(exc, InvalidRequest):  # the stream may be broken: the next audio starts another
                self._drop_utterance()
            self._tally.errors += 1
            await self._send("error", error={**describe(exc)[1]["error"], "event_id": event.event_id})

    async def _idle(self) -> None:
        if self._session is not None:
            self._drop_utterance()
            idle = describe(StreamIdle(self._limits.idle_s))[1]["error"]
            await self._send("error", error={**idle, "code": "idle_timeout", "event_id": None})

    async def _update(self, event: events.SessionUpdate | events.LegacySessionUpdate) -> None:
        legacy = isinstance(event, events.LegacySessionUpdate)
        if isinstance(event, events.LegacySessionUpdate):
            fmt = event.session.input_audio_format or self._config.format
            turn_given, turn = "turn_detection" in event.session.model_fields_set, event.session.turn_detection
            transcription = event.session.input_audio_transcription
        else:
            audio = event.session.audio.input
            fmt = audio.format.type if audio.format else self._config.format
            turn_given, turn = "turn_detection" in audio.model_fields_set, audio.turn_detection
            transcription = audio.transcription
        if fmt not in FORMATS:
            return await self._error("invalid_format", f"Audio format {fmt[:40]!r} is not one of "
                                                       f"{', '.join(FORMATS)}.", event.event_id)
        if self._session is not None and fmt != self._config.format:
            self._close_stream()  # the next audio starts a stream in the new format
        prompt = self._config.prompt
        if transcription is not None and "prompt" in transcription.model_fields_set:
            prompt = transcription.prompt or ""
        if self._session is not None and prompt != self._config.prompt:
            self._close_stream()  # the next audio starts a stream with the new boost
        self._config.format, self._config.legacy, self._config.prompt = fmt, legacy, prompt
        if turn_given:
            self._config.server_vad = turn is not None
            if turn is not None:
                self._config.silence_ms = turn.silence_duration_ms
        name = "transcription_session.updated" if legacy else "session.updated"
        await self._send(name, session=self._config.session(self._recognizer.model_name))

    async def _append(self, event: events.Append) -> None:
        try:
            await self._transcribe(event)
        finally:
            self._backlog -= _decoded_size(event)

    async def _transcribe(self, event: events.Append) -> None:
        try:
            audio = base64.b64decode(event.audio, validate=True)
        except (binascii.Error, ValueError):
            return await self._error("invalid_audio", "input_audio_buffer.append needs base64 'audio'.",
                                     event.event_id, "audio")
        session = self._session or self._open_stream()
        encoding, rate = FORMATS[self._config.format]
        seconds = len(audio) / (rate * (2 if encoding is Encoding.LINEAR_PCM else 1))
        self._buffered_s += seconds
        self._tally.audio_s += seconds
        async for result in session.push(audio):
            await self._emit([result])

    async def _commit(self, event: events.Commit) -> None:
        if self._session is None or self._buffered_s < MIN_COMMIT_S:
            return await self._error("input_audio_buffer_commit_empty",
                                     f"The buffer holds {self._buffered_s * 1000:.0f} ms of audio; a commit needs at "
                                     f"least {MIN_COMMIT_S * 1000:.0f} ms.", event.event_id)
        session, self._session = self._session, None
        events = await session.finish()
        self._close_stream()
        before = self._previous_item
        await self._emit(events)
        if self._previous_item == before:  # only silence: the client waiting for its item still gets one
            await self._conclude(self._item or f"item_{next(self._items):04d}", "")

    async def _clear(self, event: events.Clear) -> None:
        self._drop_utterance()
        await self._send("input_audio_buffer.cleared")

    def _drop_utterance(self) -> None:
        """The audio so far and the utterance it began, gone (its slot freed)."""
        self._close_stream()
        self._item, self._said = None, ""

    def _open_stream(self) -> StreamSession:
        encoding, rate = FORMATS[self._config.format]
        stack = contextlib.ExitStack()
        options = StreamOptions(interim_results=True, word_time_offsets=True, automatic_punctuation=True,
                                stop_history_s=self._config.silence_ms / 1000 if self._config.server_vad else 3600.0)
        self._session = stack.enter_context(self._recognizer.stream(
            AudioFormat(encoding, rate, 1),
            RecognitionOptions(automatic_punctuation=True, speech_contexts=prompt_contexts(self._config.prompt)),
            options))
        self._stream = stack
        return self._session

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream, self._session, self._buffered_s = None, None, 0.0

    async def _emit(self, events: list[StreamEvent]) -> None:
        for event in events:
            text = event.hypothesis.text
            if not text and not event.final:
                continue
            if self._item is None:
                if not text:
                    continue  # an utterance of silence
                self._item = f"item_{next(self._items):04d}"
                start_ms = round((event.hypothesis.words[0].start_s if event.hypothesis.words else 0) * 1000)
                await self._send("input_audio_buffer.speech_started", audio_start_ms=start_ms, item_id=self._item)
            if event.final:
                await self._finish_item(event)
            elif text.startswith(self._said) and len(text) > len(self._said):
                await self._send("conversation.item.input_audio_transcription.delta", item_id=self._item,
                                 content_index=0, delta=text[len(self._said):])
                self._said = text

    async def _finish_item(self, event: StreamEvent) -> None:
        assert self._item is not None
        end_ms = round(event.audio_processed_s * 1000)
        await self._send("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=self._item)
        await self._conclude(self._item, event.hypothesis.text)

    async def _conclude(self, item: str, text: str) -> None:
        """An utterance's item committed, added and transcribed; the next one starts afresh."""
        await self._send("input_audio_buffer.committed", item_id=item, previous_item_id=self._previous_item)
        added = "conversation.item.created" if self._config.legacy else "conversation.item.added"
        await self._send(added, previous_item_id=self._previous_item, item={
            "id": item, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}]})
        await self._send("conversation.item.input_audio_transcription.completed", item_id=item, content_index=0,
                         transcript=text)
        self._previous_item, self._item, self._said = item, None, ""
        self._tally.utterances += 1

    async def _error(self, code: str, message: str, event_id: str | None = None, param: str | None = None) -> None:
        self._tally.errors += 1
        await self._send("error", error={"type": "invalid_request_error", "code": code, "message": message,
                                         "param": param, "event_id": event_id})

    async def _send(self, kind: str, **fields: Any) -> None:
        await self._ws.send_text(json.dumps({"type": kind, "event_id": f"event_{next(self._events)}", **fields}))


def _decoded_size(event: events.Append) -> int:
    """The bytes of audio an append's base64 carries."""
    return len(event.audio) * 3 // 4
