"""Routes of the OpenAI-compatible API. Each converts the request, calls the core, converts the result."""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from parakeet_serve.audio import AudioFormat
from parakeet_serve.errors import ParakeetError, Unauthenticated, UnknownModel
from parakeet_serve.http import formats
from parakeet_serve.http.errors import HttpError, envelope, error_response
from parakeet_serve.recognizer import RecognitionOptions, Recognizer, quote
from parakeet_serve.usage import Usage

log = logging.getLogger(__name__)
GRANULARITIES = ("word", "segment")


def create_app(recognizer: Callable[[], Recognizer], *, max_upload_bytes: int, token: str | None) -> Starlette:
    """The ASGI app; `recognizer` returns the ready core or raises `NotReady`."""
    api = _Api(recognizer, max_upload_bytes, token)
    return Starlette(routes=[
        Route("/healthz", api.healthz),
        Route("/readyz", api.readyz),
        Route("/v1/models", api.guarded(api.models)),
        Route("/v1/models/{model_id:path}", api.guarded(api.model)),
        Route("/v1/audio/transcriptions", api.guarded(api.transcriptions), methods=["POST"]),
        Route("/v1/audio/translations", api.guarded(api.translations), methods=["POST"]),
    ])


class _Api:
    def __init__(self, recognizer: Callable[[], Recognizer], max_upload_bytes: int, token: str | None) -> None:
        self._recognizer = recognizer
        self._max_upload_bytes = max_upload_bytes
        self._expected = f"Bearer {token}".encode() if token else None

    def guarded(self, route: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """The bearer token, OpenAI's error envelope for every refusal, and one log line per request."""

        async def handle(request: Request) -> Response:
            began, request_id = time.monotonic(), uuid.uuid4().hex[:16]
            try:
                self._authorize(request)
                response = await route(request)
            except (ParakeetError, HttpError) as exc:
                response = error_response(exc)
            log.info("request finished", extra={"route": request.url.path, "request_id": request_id,
                                                "status": response.status_code,
                                                "elapsed_s": round(time.monotonic() - began, 4)})
            return response

        return handle

    def _authorize(self, request: Request) -> None:
        if self._expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, self._expected):
            raise Unauthenticated("This server requires 'Authorization: Bearer <token>' with a valid token.")

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        try:
            self._recognizer()
        except ParakeetError as exc:
            return error_response(exc)
        return JSONResponse({"status": "ready"})

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: Request) -> Response:
        card = self._model_card()
        if request.path_params["model_id"] not in self._aliases():
            asked = quote(request.path_params["model_id"])
            return envelope(404, f"Model {asked} is not served here; this server serves {card['id']!r}.",
                            "invalid_request_error", "model", "model_not_found")
        return JSONResponse(card)

    async def translations(self, request: Request) -> Response:
        raise HttpError(400, "Translation is not supported: Parakeet models transcribe English speech; "
                             "use /v1/audio/transcriptions.", code="unsupported")

    async def transcriptions(self, request: Request) -> Response:
        form = await self._form(request)
        recognizer = self._recognizer()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HttpError(400, "The form needs a 'file' field with the audio.", param="file")
        self._check_model(str(form.get("model") or ""))
        response_format = str(form.get("response_format") or "json")
        if response_format not in formats.FORMATS:
            raise HttpError(400, f"response_format {quote(response_format)} is not one of "
                                 f"{', '.join(formats.FORMATS)}.", param="response_format")
        granularities = form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
        if any(g not in GRANULARITIES for g in granularities):
            raise HttpError(400, "timestamp_granularities takes 'word' and 'segment'.", param="timestamp_granularities")
        if granularities and response_format != "verbose_json":
            raise HttpError(400, "timestamp_granularities needs response_format 'verbose_json'.",
                            param="timestamp_granularities")
        stream = str(form.get("stream") or "false").lower() in ("true", "1")
        if stream and response_format not in ("json", "text"):
            raise HttpError(400, "stream=true gives text events: use response_format 'json' or 'text'.",
                            param="stream")
        language = str(form.get("language") or "")
        options = RecognitionOptions(language_code=language, word_time_offsets=True, automatic_punctuation=True)
        results = await recognizer.recognize(await upload.read(), AudioFormat(), options, Usage())
        best, duration_s = results[0].hypotheses[0], results[0].audio_processed_s
        if stream:
            return StreamingResponse(_events(best), media_type="text/event-stream")
        if response_format == "json":
            usage = {"type": "duration", "seconds": max(1, round(duration_s))}
            return JSONResponse({"text": best.text, "usage": usage})
        if response_format == "text":
            return PlainTextResponse(best.text)
        if response_format == "verbose_json":
            words, with_segments = "word" in granularities, "segment" in granularities or not granularities
            body = formats.verbose_json(best, duration_s, language or recognizer.language_code, words, with_segments)
            return JSONResponse(body)
        media = "application/x-subrip" if response_format == "srt" else "text/vtt"
        return PlainTextResponse(formats.subtitles(best, response_format), media_type=media)

    async def _form(self, request: Request) -> FormData:
        declared = int(request.headers.get("content-length") or 0)
        if declared > self._max_upload_bytes:
            raise HttpError(413, f"The upload is {declared / 2**20:.1f} MiB; this server takes at most "
                                 f"{self._max_upload_bytes / 2**20:.0f} MiB (PARAKEET_MAX_UPLOAD_MB).")
        try:
            return await request.form(max_files=1, max_fields=32, max_part_size=self._max_upload_bytes)
        except Exception as exc:  # starlette raises its own kinds for malformed multipart bodies
            raise HttpError(400, f"The body is not a valid multipart form: {str(exc)[:80]}") from None

    def _aliases(self) -> set[str]:
        recognizer = self._recognizer()
        return {recognizer.model_name, recognizer.info.model_id}

    def _check_model(self, model: str) -> None:
        if model and model not in self._aliases():
            served = self._recognizer().model_name
            raise UnknownModel(f"Model {quote(model)} is not served here; this server serves {served!r}.")

    def _model_card(self) -> dict[str, Any]:
        return {"id": self._recognizer().model_name, "object": "model", "created": 0, "owned_by": "parakeet-serve"}


async def _events(hypothesis: Any) -> AsyncIterator[str]:
    """OpenAI's transcription events: a delta per segment, then the whole text (which the deltas add up to)."""
    pieces, remaining = [], hypothesis.text.split()
    for segment in formats.segments(hypothesis):
        count = len(segment.words)
        pieces.append(" ".join(remaining[:count]))
        remaining = remaining[count:]
    if remaining:
        pieces.append(" ".join(remaining))
    deltas = [piece if i == 0 else f" {piece}" for i, piece in enumerate(p for p in pieces if p)]
    for delta in deltas:
        yield f"data: {json.dumps({'type': 'transcript.text.delta', 'delta': delta})}\n\n"
    yield f"data: {json.dumps({'type': 'transcript.text.done', 'text': ''.join(deltas)})}\n\n"
