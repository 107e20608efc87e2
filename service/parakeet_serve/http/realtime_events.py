"""The client events of `/v1/realtime` as one schema (pydantic models): an event is parsed whole or refused with
one sentence naming the field, so a wrongly typed field is an `error` event and never a dropped socket."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

DEFAULT_SILENCE_MS = 500


class BadEvent(Exception):
    """An event refused before it is handled: OpenAI's error code, one sentence, the field at fault."""

    def __init__(self, code: str, message: str, event_id: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.event_id, self.param = code, event_id, param


class _Part(BaseModel):
    # Fields OpenAI has and this server ignores are allowed; a wrong type is not ("abc" for a number).
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class TurnDetection(_Part):
    type: str = "server_vad"
    silence_duration_ms: float = Field(DEFAULT_SILENCE_MS, gt=0, le=60_000)


class Transcription(_Part):
    model: str | None = None
    prompt: str | None = None
    language: str | None = None


class Format(_Part):
    type: str
    rate: int | None = None


class AudioInput(_Part):
    format: Format | None = None
    turn_detection: TurnDetection | None = None  # absent keeps the current one; null turns server VAD off
    transcription: Transcription | None = None


class Audio(_Part):
    input: AudioInput = AudioInput()


class Session(_Part):
    type: str | None = None
    audio: Audio = Audio()


class LegacySession(_Part):
    input_audio_format: str | None = None
    turn_detection: TurnDetection | None = None
    input_audio_transcription: Transcription | None = None


class _Event(_Part):
    event_id: str | None = None


class SessionUpdate(_Event):
    type: Literal["session.update"]
    session: Session = Session()


class LegacySessionUpdate(_Event):
    type: Literal["transcription_session.update"]
    session: LegacySession = LegacySession()


class Append(_Event):
    type: Literal["input_audio_buffer.append"]
    audio: str


class Commit(_Event):
    type: Literal["input_audio_buffer.commit"]


class Clear(_Event):
    type: Literal["input_audio_buffer.clear"]


ClientEvent = Annotated[SessionUpdate | LegacySessionUpdate | Append | Commit | Clear, Field(discriminator="type")]
_EVENTS: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
KINDS = ("session.update", "transcription_session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
         "input_audio_buffer.clear")


def parse(text: str) -> ClientEvent:
    """The event in `text`, or `BadEvent`."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser goes
        raise BadEvent("invalid_json", "The event is not valid JSON.") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise BadEvent("invalid_json", "The event is not a JSON object with a 'type'.")
    event_id = raw.get("event_id") if isinstance(raw.get("event_id"), str) else None
    if raw["type"] not in KINDS:
        raise BadEvent("unknown_event", f"Unknown event type {raw['type'][:40]!r} for a transcription session.",
                       event_id)
    try:
        return _EVENTS.validate_python(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in error["loc"][1:])  # the first part is the event's type
        raise BadEvent("invalid_value", f"{raw['type']}: {field}: {error['msg']}.", event_id, field) from None
