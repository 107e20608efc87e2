"""`nvidia.riva.asr.RivaSpeechRecognition`: each RPC converts, calls the core, converts back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from riva.client.proto import riva_asr_pb2, riva_asr_pb2_grpc

from parakeet_serve.errors import InvalidRequest, NotReady, ParakeetError
from parakeet_serve.recognizer import Recognizer
from parakeet_serve.riva import convert
from parakeet_serve.riva.status import status_for, trailers_for

log = logging.getLogger(__name__)


@dataclass
class _Call:
    """What one RPC did, for its log line."""

    rpc: str
    request_id: str
    audio_s: float = 0.0
    ignored: list[str] = field(default_factory=list)


class RivaAsrServicer(riva_asr_pb2_grpc.RivaSpeechRecognitionServicer):
    """Riva's ASR service over the recognition core.

    `recognizer` returns the ready core or raises `NotReady` (model loading, warming, draining).
    """

    def __init__(self, recognizer: Callable[[], Recognizer], model_parameters: Callable[[], dict[str, str]]) -> None:
        self._recognizer = recognizer
        self._model_parameters = model_parameters

    async def Recognize(
        self, request: riva_asr_pb2.RecognizeRequest, context: grpc.aio.ServicerContext
    ) -> riva_asr_pb2.RecognizeResponse:
        async with _scope(context, "Recognize", request.id.value) as call:
            recognizer = self._recognizer()
            call.ignored = convert.ignored_fields(request.config)
            fmt = convert.audio_format(request.config)
            results = await recognizer.recognize(request.audio, fmt, convert.recognition_options(request.config))
            call.audio_s = results[0].audio_processed_s if results else 0.0
            return convert.recognize_response(results, request.id)

    async def StreamingRecognize(
        self, request_iterator: AsyncIterator[riva_asr_pb2.StreamingRecognizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[riva_asr_pb2.StreamingRecognizeResponse]:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "StreamingRecognize is not available in this version; use Recognize."
        )
        yield riva_asr_pb2.StreamingRecognizeResponse()  # pragma: no cover - abort raises; this makes a generator

    async def GetRivaSpeechRecognitionConfig(
        self, request: riva_asr_pb2.RivaSpeechRecognitionConfigRequest, context: grpc.aio.ServicerContext
    ) -> riva_asr_pb2.RivaSpeechRecognitionConfigResponse:
        async with _scope(context, "GetRivaSpeechRecognitionConfig", ""):
            recognizer = self._recognizer()
            return convert.config_response(recognizer.model_name, self._model_parameters(), request.model_name)


@contextlib.asynccontextmanager
async def _scope(context: grpc.aio.ServicerContext, rpc: str, request_id: str) -> AsyncIterator[_Call]:
    """Log one line per RPC and turn the core's errors into a status with one sentence."""
    call = _Call(rpc, request_id or uuid.uuid4().hex[:16])
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    log.debug("request received", extra={"rpc": rpc, "request_id": call.request_id})
    try:
        yield call
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED  # the client left or its deadline passed
        raise
    except ParakeetError as exc:
        code, message = status_for(exc)
        level = logging.INFO if isinstance(exc, InvalidRequest | NotReady) else logging.WARNING
        log.log(level, "request refused", extra={"rpc": rpc, "request_id": call.request_id, "reason": message})
        context.set_trailing_metadata(trailers_for(exc))
        await context.abort(code, message)
    except Exception:
        code, message = status_for(Exception())
        log.exception("request failed", extra={"rpc": rpc, "request_id": call.request_id})
        await context.abort(code, message)
    finally:
        elapsed = time.perf_counter() - started
        log.info(
            "request finished",
            extra={
                "rpc": rpc, "request_id": call.request_id, "code": code.name, "audio_s": round(call.audio_s, 3),
                "elapsed_s": round(elapsed, 4), "rtf": round(elapsed / call.audio_s, 4) if call.audio_s else None,
                **({"ignored_fields": call.ignored} if call.ignored else {}),
            },
        )
