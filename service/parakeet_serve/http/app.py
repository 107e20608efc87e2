"""Routes of the OpenAI-compatible API. Each converts the request, calls the core, converts the result."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from parakeet_serve.audio import AudioFormat
from parakeet_serve.engine.types import Hypothesis
from parakeet_serve.errors import ParakeetError, Unauthenticated, UnknownModel, quote
from parakeet_serve.http import convert, formats
from parakeet_serve.http.errors import HttpError, describe, envelope, error_response
from parakeet_serve.http.realtime import RealtimeLimits, RealtimeTranscription
from parakeet_serve.recognizer import RecognitionOptions, Recognizer
from parakeet_serve.telemetry import Telemetry
from parakeet_serve.telemetry.metrics import TRANSCRIPTIONS
from parakeet_serve.usage import Usage

log = logging.getLogger(__name__)
TRANSCRIPTIONS_ROUTE = "/v1/audio/transcriptions"
STATIC = Path(__file__).with_name("static")
T = TypeVar("T")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int  # a body past this is refused (413) as it arrives
    body_timeout_s: float  # a body with no bytes for this long is refused (408)


def create_app(recognizer: Callable[[], Recognizer], telemetry: Telemetry, *, upload: UploadLimits,
               realtime: RealtimeLimits, token: str | None, cors_origins: Sequence[str] = ()) -> Starlette:
    """The ASGI app; `recognizer` returns the ready core or raises `NotReady`."""
    api = _Api(recognizer, telemetry, upload, token, realtime)
    cors = [Middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                       allow_headers=["Authorization", "Content-Type"])] if cors_origins else []
    return Starlette(middleware=cors, routes=[
        Route("/healthz", api.healthz),
        Route("/readyz", api.readyz),
        Route("/v1/models", api.guarded("/v1/models", api.models)),
        Route("/v1/models/{model_id:path}", api.guarded("/v1/models/{model_id}", api.model)),
        Route(TRANSCRIPTIONS_ROUTE, api.guarded(TRANSCRIPTIONS_ROUTE, api.transcriptions), methods=["POST"]),
        Route("/v1/audio/translations", api.guarded("/v1/audio/translations", api.translations), methods=["POST"]),
        WebSocketRoute("/v1/realtime", api.realtime),
        # The browser page (no build step, nothing fetched from elsewhere).
        Route("/", lambda request: FileResponse(STATIC / "index.html")),
        Mount("/static", StaticFiles(directory=STATIC)),
    ], exception_handlers={HTTPException: _routing_error})


async def _routing_error(request: Request, exc: Exception) -> Response:
    """A path or method no route takes, in OpenAI's envelope like every other refusal (not Starlette's text)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        message = f"{request.url.path} does not take {request.method}; it takes {exc.headers['Allow']}."
        return envelope(405, message, "invalid_request_error", code="method_not_allowed", headers=exc.headers)
    if exc.status_code == 404:
        return envelope(404, f"There is no {quote(request.url.path)} here.", "invalid_request_error",
                        code="not_found")
    return envelope(exc.status_code, exc.detail, "invalid_request_error")


class _Api:
    def __init__(self, recognizer: Callable[[], Recognizer], telemetry: Telemetry, upload: UploadLimits,
                 token: str | None, realtime: RealtimeLimits) -> None:
        self._recognizer = recognizer
        self._realtime = realtime
        self._telemetry = telemetry
        self._upload = upload
        self._expected = f"Bearer {token}".encode() if token else None

    def guarded(self, path: str, route: Callable[[Request, Usage], Awaitable[Response]]
                ) -> Callable[[Request], Awaitable[Response]]:
        """The bearer token, OpenAI's error envelope for every refusal, and per request a span, metrics
        and one log line, as gRPC's calls have."""

        async def handle(request: Request) -> Response:
            began, request_id, usage = time.monotonic(), uuid.uuid4().hex[:16], Usage()
            metrics = self._telemetry.metrics
            span = self._telemetry.tracer.start_span(f"{request.method} {path}", kind=SpanKind.SERVER)
            with trace.use_span(span, end_on_exit=False):
                try:
                    self._authorize(request)
                    response = await route(request, usage)
                except (ParakeetError, HttpError) as exc:
                    metrics.count_rejection(exc)
                    response = error_response(exc)
                except Exception as exc:  # a failure of this server: OpenAI's envelope, logged, the span ended
                    log.exception("request failed", extra={"route": path, "request_id": request_id})
                    span.record_exception(exc)
                    response = error_response(exc)

            def finish() -> None:
                span.end()
                elapsed = time.monotonic() - began
                metrics.http_requests.labels(path, str(response.status_code)).inc()
                rtf = elapsed / usage.audio_s if usage.audio_s else None
                if path == TRANSCRIPTIONS_ROUTE:
                    metrics.request_duration.labels(TRANSCRIPTIONS).observe(elapsed)
                    if rtf is not None and response.status_code == 200:
                        metrics.real_time_factor.labels(TRANSCRIPTIONS).observe(rtf)
                log.info("request finished", extra={
                    "route": path, "request_id": request_id, "status": response.status_code,
                    "elapsed_s": round(elapsed, 4), "audio_s": round(usage.audio_s, 3),
                    "queue_wait_s": round(usage.queue_wait_s, 4), "rtf": round(rtf, 4) if rtf is not None else None})

            if isinstance(response, StreamingResponse):  # its work is done when the last event is sent
                response.background = BackgroundTask(finish)
            else:
                finish()
            return response

        return handle

    def _authorize(self, request: Request | WebSocket) -> None:
        if self._expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, self._expected):
            raise Unauthenticated("This server requires 'Authorization: Bearer <token>' with a valid token.")

    async def realtime(self, websocket: WebSocket) -> None:
        """One transcription session per socket; refusals (token, readiness) as an `error` event, then a close."""
        await websocket.accept()
        try:
            self._authorize(websocket)
            recognizer = self._recognizer()
        except ParakeetError as exc:  # the HTTP table, as every refusal on the socket
            await websocket.send_text(json.dumps({"type": "error", "error": describe(exc)[1]["error"]}))
            await websocket.close(code=1008 if isinstance(exc, Unauthenticated) else 1013)
            return
        self._telemetry.metrics.http_requests.labels("/v1/realtime", "101").inc()
        await RealtimeTranscription(websocket, recognizer, self._realtime).run()

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        try:
            self._recognizer()
        except ParakeetError as exc:
            return error_response(exc)
        return JSONResponse({"status": "ready"})

    async def models(self, request: Request, usage: Usage) -> Response:
        recognizer = self._recognizer()
        names = (recognizer.model_name, *recognizer.model_aliases)
        return JSONResponse({"object": "list", "data": [_model_card(name) for name in names]})

    async def model(self, request: Request, usage: Usage) -> Response:
        asked, recognizer = request.path_params["model_id"], self._recognizer()
        try:
            _check_model(recognizer, asked)
        except UnknownModel as exc:
            return envelope(404, str(exc), "invalid_request_error", "model", "model_not_found")
        return JSONResponse(_model_card(asked if asked in recognizer.model_aliases else recognizer.model_name))

    async def translations(self, request: Request, usage: Usage) -> Response:
        raise HttpError(400, "Translation is not supported: Parakeet models transcribe English speech; "
                             "use /v1/audio/transcriptions.", code="unsupported")

    async def transcriptions(self, request: Request, usage: Usage) -> Response:
        asked = convert.transcription_request(await self._form(request))
        recognizer = self._recognizer()
        _check_model(recognizer, asked.model)
        data = await asked.upload.read()
        if asked.stream:
            pieces = recognizer.transcribe_progressively(data, AudioFormat(), asked.options, usage, TRANSCRIPTIONS)
            first = await anext(pieces)  # refusals (bad audio, a full queue) come as statuses, before any event
            return StreamingResponse(_events(first, pieces, asked.logprobs), media_type="text/event-stream")
        results = await _unless_gone(request, recognizer.transcribe(data, AudioFormat(), asked.options, usage,
                                                                   TRANSCRIPTIONS))
        return convert.transcription_response(asked, results[0].hypotheses[0], results[0].audio_processed_s,
                                              recognizer.language_code)

    async def _form(self, request: Request) -> FormData:
        declared = int(request.headers.get("content-length") or 0)
        if declared > self._upload.max_bytes:
            raise self._too_large(f"{declared / 2**20:.1f} MiB")
        try:
            return await self._limited(request).form(max_files=1, max_fields=32, max_part_size=self._upload.max_bytes)
        except HttpError:
            raise
        except Exception as exc:  # starlette raises its own kinds for malformed multipart bodies
            raise HttpError(400, f"The body is not a valid multipart form: {str(exc)[:80]}") from None

    def _too_large(self, size: str) -> HttpError:
        return HttpError(413, f"The upload is {size}; this server takes at most "
                              f"{self._upload.max_bytes / 2**20:.0f} MiB (PARAKEET_MAX_UPLOAD_MB).")

    def _limited(self, request: Request) -> Request:
        """`request` whose body reads stop with a 413 once past the limit, whatever the headers said (a chunked
        upload declares no length, and a declared one can lie), and with a 408 when the body stalls (a client
        trickling its body, or gone without closing, would hold its connection and its memory forever)."""
        received, limits = 0, self._upload

        async def receive() -> Any:
            nonlocal received
            try:
                message = await asyncio.wait_for(request.receive(), limits.body_timeout_s)
            except TimeoutError:
                raise HttpError(408, f"No part of the body arrived for {limits.body_timeout_s:g} s "
                                     "(PARAKEET_HTTP_BODY_TIMEOUT_S).", code="body_timeout") from None
            received += len(message.get("body", b""))
            if received > limits.max_bytes:
                raise self._too_large("over that")
            return message

        return Request(request.scope, receive)



def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "parakeet-serve"}


async def _unless_gone(request: Request, work: Awaitable[T]) -> T:
    """`work`, cancelled when the client hangs up first, so its queued audio is dropped before compute (as a
    cancelled gRPC call's is). Only once the body is read: the watch takes the request's next message."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if not watcher.done():
            raise  # this request itself was cancelled (the server is stopping)
        raise HttpError(499, "The client closed the request before its result.",
                        code="client_closed_request") from None
    finally:
        watcher.cancel()


def _check_model(recognizer: Recognizer, model: str) -> None:
    """Refuse a model this server does not serve (the core's check); its hub id names it as well as its name."""
    if model and model != recognizer.info.model_id:
        recognizer.check_model(RecognitionOptions(model=model))


async def _events(first: Hypothesis, rest: AsyncIterator[Hypothesis], logprobs: bool) -> AsyncIterator[str]:
    """OpenAI's transcription events: a delta per segment of each piece as the piece is recognised, then
    the whole text (which the deltas add up to). A failure after the first event ends the stream with
    an error event in OpenAI's envelope."""
    text, tokens = "", []
    async with contextlib.aclosing(rest):
        try:
            async for piece in _prepend(first, rest):
                for delta in _deltas(piece, leading_space=bool(text)):
                    text += delta
                    yield _event({"type": "transcript.text.delta", "delta": delta})
                tokens.extend(piece.tokens)
        except ParakeetError as exc:
            yield _event(describe(exc)[1])
            return
    done: dict[str, Any] = {"type": "transcript.text.done", "text": text}
    if logprobs:
        done["logprobs"] = formats.logprobs(Hypothesis(text, 0.0, tokens=tuple(tokens)))
    yield _event(done)


async def _prepend(first: Hypothesis, rest: AsyncIterator[Hypothesis]) -> AsyncIterator[Hypothesis]:
    yield first
    async for piece in rest:
        yield piece


def _deltas(hypothesis: Hypothesis, leading_space: bool) -> list[str]:
    """The hypothesis's text in pieces, one per segment (its words cut at pauses)."""
    pieces, remaining = [], hypothesis.text.split()
    for segment in formats.segments(hypothesis):
        count = len(segment.words)
        pieces.append(" ".join(remaining[:count]))
        remaining = remaining[count:]
    pieces.append(" ".join(remaining))
    return [f" {piece}" if leading_space or i else piece for i, piece in enumerate(p for p in pieces if p)]


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"
