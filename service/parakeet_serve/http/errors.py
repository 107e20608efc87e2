"""The one table from the service's errors to OpenAI's error envelope and HTTP statuses."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from parakeet_serve.errors import (
    INTERNAL_FAILURE,
    EngineFailure,
    InvalidRequest,
    NotReady,
    ParakeetError,
    QueueFull,
    QueueTimeout,
    StreamIdle,
    Unauthenticated,
    UnknownModel,
    UnrecognisedAudio,
)

_STATUSES: tuple[tuple[type[ParakeetError], int, str, str | None], ...] = (
    (UnknownModel, 400, "invalid_request_error", None),  # its own param: model or language
    (InvalidRequest, 400, "invalid_request_error", None),
    (QueueFull, 429, "rate_limit_error", None),
    (QueueTimeout, 504, "timeout_error", None),
    (StreamIdle, 408, "timeout_error", None),
    (NotReady, 503, "service_unavailable_error", None),
    (EngineFailure, 500, "server_error", None),
    (Unauthenticated, 401, "authentication_error", None),
)


class HttpError(Exception):
    """A refusal decided by the HTTP front end itself (a form field, an upload's size)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


def envelope(status: int, message: str, kind: str, param: str | None = None, code: str | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, param, code), status_code=status, headers=headers)


def error_response(exc: Exception) -> JSONResponse:
    """OpenAI's envelope for `exc`, with `Retry-After` when the queue is full."""
    status, body = describe(exc)
    headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))} if isinstance(exc, QueueFull) else None
    return JSONResponse(body, status_code=status, headers=headers)


def describe(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The HTTP status and OpenAI's error body for `exc` (the body is also a stream's error event)."""
    if isinstance(exc, HttpError):  # the front end's own refusals are all about the request
        return exc.status, error_body(str(exc), "invalid_request_error", exc.param, exc.code)
    if isinstance(exc, UnrecognisedAudio):  # the decoder's advice (declare a headerless encoding) is gRPC's
        return 400, error_body("The file is not audio this server reads: send WAV, FLAC, Ogg (Opus or Vorbis), "
                               "MP3, M4A or WebM.", "invalid_request_error", "file")
    for error, status, kind, param in _STATUSES:
        if isinstance(exc, error):
            return status, error_body(str(exc), kind, getattr(exc, "param", param))
    return 500, error_body(INTERNAL_FAILURE, "server_error")


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
