"""`nvidia.riva.asr.RivaSpeechRecognition`: each RPC converts, calls the core, converts back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.trace import SpanKind, Status, StatusCode
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc

from parakeet_serve.errors import EngineFailure, InvalidRequest, NotReady, ParakeetError, StreamIdle
from parakeet_serve.recognizer import Recognizer
from parakeet_serve.riva import convert
from parakeet_serve.riva.status import REQUEST_ID_KEY, status_for, trailers_for
from parakeet_serve.telemetry import Telemetry
from parakeet_serve.telemetry.tracing import incoming_context
from parakeet_serve.usage import Usage

log = logging.getLogger(__name__)


@dataclass
class _Call:
    """What one RPC did, for its log line."""

    rpc: str
    request_id: str
    usage: Usage = field(default_factory=Usage)
    ignored: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)


class RivaAsrServicer(riva_asr_pb2_grpc.RivaSpeechRecognitionServicer):
    """Riva's ASR service over the recognition core.

    `recognizer` returns the ready core or raises `NotReady` (model loading, warming, draining).
    """

    def __init__(
        self,
        recognizer: Callable[[], Recognizer],
        model_parameters: Callable[[], dict[str, str]],
        closing: asyncio.Event,
        stop_history_ms: float,
        telemetry: Telemetry,
        idle_s: float = 0.0,
    ) -> None:
        self._telemetry = telemetry
        self._recognizer = recognizer
        self._model_parameters = model_parameters
        self._closing = closing  # set when open streams must wrap up (the drain's grace is ending)
        self._stop_history_ms = stop_history_ms
        self._idle_s = idle_s  # a stream that sends nothing this long is ended (0: never)

    async def Recognize(
        self, request: riva_asr_pb2.RecognizeRequest, context: grpc.aio.ServicerContext
    ) -> riva_asr_pb2.RecognizeResponse:
        async with _scope(context, self._telemetry, "Recognize", request.id.value) as call:
            recognizer = self._recognizer()
            call.ignored = convert.ignored_fields(request.config)
            fmt = convert.audio_format(request.config)
            options = convert.recognition_options(request.config)
            results = await recognizer.transcribe(request.audio, fmt, options, call.usage)
            return convert.recognize_response(results, request.id)

    async def StreamingRecognize(
        self, request_iterator: AsyncIterator[riva_asr_pb2.StreamingRecognizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[riva_asr_pb2.StreamingRecognizeResponse]:
        messages = contextlib.aclosing(_until(request_iterator, self._closing, self._idle_s))  # closed on errors
        async with _scope(context, self._telemetry, "StreamingRecognize", "") as call, messages as requests:
            recognizer = self._recognizer()
            first = await anext(requests, None)
            if first is None or not first.HasField("streaming_config"):
                raise InvalidRequest("The first message of a stream must carry streaming_config.")
            if first.id.value:
                call.request_id = first.id.value
            config = first.streaming_config
            call.ignored = convert.ignored_fields(config.config)
            options = convert.stream_options(config, self._stop_history_ms)
            fmt = convert.audio_format(config.config)
            with recognizer.stream(fmt, convert.recognition_options(config.config), options) as session:
                # Admitted: headers now, not with the first result, so that a client can wait for them before
                # sending audio (an asyncio client whose write is in flight when a refusal arrives reports
                # INTERNAL instead of the refusal: grpc/grpc#36066).
                await context.send_initial_metadata(((REQUEST_ID_KEY, call.request_id),))
                call.usage = session.usage
                if first.audio_content:
                    async for event in session.push(first.audio_content):
                        yield convert.streaming_response(event)
                async for request in requests:
                    if request.HasField("streaming_config"):
                        raise InvalidRequest("streaming_config may only come in the first message of a stream.")
                    async for event in session.push(request.audio_content):
                        yield convert.streaming_response(event)
                for event in await session.finish():
                    yield convert.streaming_response(event)
                call.figures = {"finals": session.finals, "compute_amplification": session.compute_amplification}
                context.set_trailing_metadata(
                    (
                        ("x-parakeet-audio-seconds", f"{session.audio_s:.3f}"),
                        ("x-parakeet-encoder-seconds", f"{session.encoder_input_s:.3f}"),
                    )
                )

    async def GetRivaSpeechRecognitionConfig(
        self, request: riva_asr_pb2.RivaSpeechRecognitionConfigRequest, context: grpc.aio.ServicerContext
    ) -> riva_asr_pb2.RivaSpeechRecognitionConfigResponse:
        async with _scope(context, self._telemetry, "GetRivaSpeechRecognitionConfig", ""):
            recognizer = self._recognizer()
            return convert.config_response(recognizer.model_name, self._model_parameters(), request.model_name)


@contextlib.asynccontextmanager
async def _scope(context: grpc.aio.ServicerContext, telemetry: Telemetry, rpc: str, request_id: str
                 ) -> AsyncIterator[_Call]:
    """One RPC's span, metrics and log line; the core's errors become a status with one sentence."""
    call = _Call(rpc, request_id or uuid.uuid4().hex[:16])
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    log.debug("request received", extra={"rpc": rpc, "request_id": call.request_id})
    parent = incoming_context(context.invocation_metadata())
    with telemetry.tracer.start_as_current_span(rpc, context=parent, kind=SpanKind.SERVER,
                                                record_exception=False, set_status_on_exception=False) as span:
        try:
            yield call
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the client left or its deadline passed
            raise
        except ParakeetError as exc:
            code, message = status_for(exc)
            telemetry.metrics.count_rejection(exc)
            level = logging.INFO if isinstance(exc, InvalidRequest | NotReady) else logging.WARNING
            failed = isinstance(exc, EngineFailure)  # its cause is logged by the scheduler, once a batch
            log.log(logging.ERROR if failed else level, "request failed" if failed else "request refused",
                    extra={"rpc": rpc, "request_id": call.request_id, "reason": message})
            context.set_trailing_metadata(trailers_for(exc))
            await context.abort(code, message)
        except Exception as exc:
            code, message = status_for(exc)
            span.record_exception(exc)
            log.exception("request failed", extra={"rpc": rpc, "request_id": call.request_id})
            await context.abort(code, message)
        finally:
            elapsed = time.perf_counter() - started
            _finish(telemetry, span, call, code, elapsed)


def _finish(telemetry: Telemetry, span: Any, call: _Call, code: grpc.StatusCode, elapsed: float) -> None:
    """Record a finished RPC in the metrics, its span and one log line."""
    usage, rpc, metrics = call.usage, call.rpc, telemetry.metrics
    # A stream's processing is its share of inference, not its (real-time) duration.
    processing = usage.compute_s if rpc == "StreamingRecognize" else elapsed
    rtf = processing / usage.audio_s if usage.audio_s else None
    metrics.requests.labels(rpc, code.name).inc()
    if rpc != "StreamingRecognize":
        metrics.request_duration.labels(rpc).observe(elapsed)
    if rtf is not None and code == grpc.StatusCode.OK:
        metrics.real_time_factor.labels(rpc).observe(rtf)
    figures = {"audio_s": round(usage.audio_s, 3), "queue_wait_s": round(usage.queue_wait_s, 4),
               "rtf": round(rtf, 4) if rtf is not None else None}
    span.set_attributes({"rpc.grpc.status_code": code.value[0], "request.id": call.request_id,
                         **{k: v for k, v in figures.items() if v is not None}})
    if code != grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))
    log.info(
        "request finished",
        extra={
            "rpc": rpc, "request_id": call.request_id, "code": code.name, "elapsed_s": round(elapsed, 4),
            **figures, **call.figures,
            **({"ignored_fields": call.ignored} if call.ignored else {}),
        },
    )


async def _until(messages: AsyncIterator[Any], closing: asyncio.Event, idle_s: float) -> AsyncIterator[Any]:
    """The client's messages until it half-closes, or until `closing` is set (the stream then ends cleanly);
    `StreamIdle` when none comes for `idle_s` (0: no limit)."""
    stop = asyncio.ensure_future(closing.wait())
    iterator = aiter(messages)
    message: asyncio.Future[Any] | None = None
    try:
        while True:
            message = asyncio.ensure_future(anext(iterator))
            await asyncio.wait((message, stop), timeout=idle_s or None, return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                return
            if not message.done():
                raise StreamIdle(idle_s)
            try:
                item = message.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        stop.cancel()
        if message is not None:
            message.cancel()
