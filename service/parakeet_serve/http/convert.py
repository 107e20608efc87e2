"""OpenAI's transcription form to the core's request, and a transcript to the response format asked for (as
`riva/convert.py` is for gRPC): the route only calls these and the core."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import FormData, UploadFile
from starlette.responses import JSONResponse, PlainTextResponse, Response

from parakeet_serve.engine.types import Hypothesis
from parakeet_serve.errors import quote
from parakeet_serve.http import formats
from parakeet_serve.http.errors import HttpError
from parakeet_serve.http.prompt import prompt_contexts
from parakeet_serve.recognizer import RecognitionOptions

GRANULARITIES = ("word", "segment")


@dataclass(frozen=True)
class TranscriptionRequest:
    """A `/v1/audio/transcriptions` form, checked."""

    upload: UploadFile
    model: str
    options: RecognitionOptions
    response_format: str
    granularities: tuple[str, ...]
    logprobs: bool
    stream: bool


def transcription_request(form: FormData) -> TranscriptionRequest:
    """The form's fields, or `HttpError` naming the first one that is wrong."""
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise HttpError(400, "The form needs a 'file' field with the audio.", param="file")
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
    include = form.getlist("include[]") + form.getlist("include")
    if any(item != "logprobs" for item in include):
        raise HttpError(400, "include takes 'logprobs'.", param="include")
    if include and response_format != "json":
        raise HttpError(400, "include=logprobs needs response_format 'json'.", param="include")
    stream = str(form.get("stream") or "false").lower() in ("true", "1")
    if stream and response_format not in ("json", "text"):
        raise HttpError(400, "stream=true gives text events: use response_format 'json' or 'text'.", param="stream")
    options = RecognitionOptions(language_code=str(form.get("language") or ""), word_time_offsets=True,
                                 automatic_punctuation=True,
                                 speech_contexts=prompt_contexts(str(form.get("prompt") or "")))
    return TranscriptionRequest(upload, str(form.get("model") or ""), options, response_format,
                                tuple(str(g) for g in granularities), bool(include), stream)


def transcription_response(request: TranscriptionRequest, best: Hypothesis, duration_s: float,
                           served_language: str) -> Response:
    """The transcript in the response format the request asked for."""
    kind = request.response_format
    if kind == "json":
        billed = {"type": "duration", "seconds": max(1, round(duration_s))}
        extra = {"logprobs": formats.logprobs(best)} if request.logprobs else {}
        return JSONResponse({"text": best.text, **extra, "usage": billed})
    if kind == "text":
        return PlainTextResponse(best.text)
    if kind == "verbose_json":
        words = "word" in request.granularities
        with_segments = "segment" in request.granularities or not request.granularities
        language = request.options.language_code or served_language
        return JSONResponse(formats.verbose_json(best, duration_s, language, words, with_segments))
    media = "application/x-subrip" if kind == "srt" else "text/vtt"
    return PlainTextResponse(formats.subtitles(best, kind), media_type=media)
