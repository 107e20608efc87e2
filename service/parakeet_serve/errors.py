"""The errors of parakeet-serve.

The core raises only these; each front end maps them to its own status codes in one table
(`riva/status.py` for gRPC). Every message is one sentence a client can act on.

    ParakeetError
    ├── SettingsError          bad configuration at start-up
    │   └── PortUnavailable    a port the settings name cannot be listened on
    ├── ModelLoadError         the model cannot be found or loaded
    ├── InvalidRequest         the request itself is wrong
    │   ├── InvalidAudio       empty, corrupt, truncated or undecodable audio
    │   ├── AudioTooLong       more audio than the service accepts
    │   └── UnknownModel       no served model matches the requested model or language
    ├── QueueFull              admission control refused the work (retry later)
    │   └── StreamLimit        the server holds its maximum of streams
    ├── QueueTimeout           the work waited too long and was dropped
    ├── EngineFailure          the model failed on the work's batch (logged once, with its cause, by the scheduler)
    ├── NotReady               the model is loading, warming up or the server is draining
    └── Unauthenticated        missing or wrong credentials
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class ParakeetError(Exception):
    """Base of every error the service raises on purpose."""


class SettingsError(ParakeetError):
    """The configuration is invalid."""


class PortUnavailable(SettingsError):
    """A port the settings name is taken or not allowed."""


class ModelLoadError(ParakeetError):
    """The model could not be resolved or loaded."""


class InvalidRequest(ParakeetError):
    """The client sent something the service cannot accept."""


class InvalidAudio(InvalidRequest):
    """The audio cannot be decoded with the declared or detected format."""


class UnrecognisedAudio(InvalidAudio):
    """Audio in no container this server reads, and no headerless encoding declared (a front end whose users
    cannot declare one says so in its own words)."""


class AudioTooLong(InvalidRequest):
    """The audio is longer than the configured maximum."""


class UnknownModel(InvalidRequest):
    """No served model matches the request; `param` names the field that missed (`model` or `language`)."""

    def __init__(self, message: str, param: str = "model") -> None:
        super().__init__(message)
        self.param = param


class QueueFull(ParakeetError):
    """The inference queue is full."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StreamLimit(QueueFull):
    """The server holds as many streams as it can keep in real time."""


class StreamsBehind(StreamLimit):
    """The streams the server holds are falling behind real time: it takes no more until they catch up."""


class StreamIdle(ParakeetError):
    """A stream sent nothing for longer than the idle timeout: it is ended to free its slot."""

    def __init__(self, idle_s: float) -> None:
        super().__init__(f"Nothing arrived on the stream for {idle_s:g} s, so it was ended to free its slot "
                         "(PARAKEET_STREAM_IDLE_TIMEOUT_S).")


class QueueTimeout(ParakeetError):
    """The work waited in the queue past its time-to-live."""


# What a client is told of any failure inside the server (the engine's, or a bug's), never the failure's own words.
INTERNAL_FAILURE = "Recognition failed inside the server; the failure is logged."


class EngineFailure(ParakeetError):
    """The engine raised on a batch: each of its callers gets INTERNAL_FAILURE."""

    def __init__(self) -> None:
        super().__init__(INTERNAL_FAILURE)


class NotReady(ParakeetError):
    """The service cannot take work now."""


class Unauthenticated(ParakeetError):
    """The request lacks valid credentials."""


def quote(sent: str, limit: int = 40) -> str:
    """What a client sent, for an error sentence: at most a short prefix (a 10 KB field stays out of it)."""
    return repr(sent) if len(sent) <= limit else f"{sent[:limit]!r}... ({len(sent)} characters)"


@contextlib.contextmanager
def listening(what: str, host: str, port: int, setting: str) -> Iterator[None]:
    """A port that cannot be bound ends start-up with one sentence naming it and its setting (gRPC raises
    RuntimeError, the others OSError)."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise PortUnavailable(f"Cannot listen on {host}:{port} for {what} ({setting}): {reason}.") from None
