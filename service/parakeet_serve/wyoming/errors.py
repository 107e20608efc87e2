"""The one table from the service's errors to Wyoming `error` events, and to the status the metrics count them
under (the names gRPC's calls are counted with, so one dashboard query covers every front end)."""

from __future__ import annotations

from dataclasses import dataclass

from wyoming.error import Error

from parakeet_serve.errors import (
    INTERNAL_FAILURE,
    AudioTooLong,
    EngineFailure,
    InvalidAudio,
    InvalidRequest,
    NotReady,
    QueueFull,
    QueueTimeout,
    StreamIdle,
    UnknownModel,
)

_CODES: tuple[tuple[type[Exception], str, str], ...] = (
    (UnknownModel, "unknown_model", "INVALID_ARGUMENT"),
    (AudioTooLong, "audio_too_long", "INVALID_ARGUMENT"),
    (InvalidAudio, "invalid_audio", "INVALID_ARGUMENT"),
    (InvalidRequest, "invalid_request", "INVALID_ARGUMENT"),
    (QueueFull, "busy", "RESOURCE_EXHAUSTED"),
    (QueueTimeout, "timeout", "DEADLINE_EXCEEDED"),
    (StreamIdle, "idle_timeout", "OUT_OF_RANGE"),
    (NotReady, "not_ready", "UNAVAILABLE"),
    (EngineFailure, "internal", "INTERNAL"),
)


@dataclass(frozen=True)
class Refusal:
    """What the client is told (an `error` event) and the status the utterance is counted under."""

    code: str
    message: str
    status: str

    def event(self) -> Error:
        return Error(text=self.message, code=self.code)


def refusal_for(exc: BaseException) -> Refusal:
    for kind, code, status in _CODES:
        if isinstance(exc, kind):
            return Refusal(code, str(exc), status)
    return Refusal("internal", INTERNAL_FAILURE, "INTERNAL")


def bad_event(code: str, message: str) -> Refusal:
    """A refusal decided by the front end itself: the event, not the service, is at fault."""
    return Refusal(code, message, "INVALID_ARGUMENT")
