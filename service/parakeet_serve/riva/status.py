"""The one table from the service's errors to gRPC status codes, used by every RPC."""

from __future__ import annotations

import grpc

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
)

_CODES: tuple[tuple[type[ParakeetError], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QueueTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (StreamIdle, grpc.StatusCode.OUT_OF_RANGE),  # as Google's speech API answers an audio timeout
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (EngineFailure, grpc.StatusCode.INTERNAL),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
)

# gRPC's standard trailer for server pushback: clients with retry policies wait this long.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
REQUEST_ID_KEY = "x-parakeet-request-id"  # a stream's id in the server's logs, in its headers once admitted


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and one-sentence message a client gets for `exc`."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_FAILURE


def trailers_for(exc: BaseException) -> tuple[tuple[str, str], ...]:
    if isinstance(exc, QueueFull):
        return ((RETRY_PUSHBACK_KEY, str(round(exc.retry_after_s * 1000))),)
    return ()
