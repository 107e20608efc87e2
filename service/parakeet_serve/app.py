"""The service's life cycle: serve health at once, load and warm the model, serve, drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from parakeet_serve.engine import load_engine, load_onnx_engine
from parakeet_serve.engine.base import Engine, WarmupShape
from parakeet_serve.engine.loader import onnx_directory
from parakeet_serve.errors import NotReady, ParakeetError, PortUnavailable, listening
from parakeet_serve.host_memory import freeze_loaded_objects, release_loaded_objects
from parakeet_serve.http.server import HttpServer
from parakeet_serve.recognizer import Recognizer
from parakeet_serve.riva.server import RivaServer
from parakeet_serve.scheduler import Scheduler, inference_thread
from parakeet_serve.settings import Settings
from parakeet_serve.telemetry import Telemetry
from parakeet_serve.telemetry.tracing import otlp_exporter
from parakeet_serve.word_boost import MAX_BOOST, BoostLimits

if TYPE_CHECKING:
    from parakeet_serve.wyoming.server import WyomingServer

log = logging.getLogger(__name__)


def engine_for(s: Settings) -> Engine:
    """The engine `s` describes, loaded as the server loads it (not yet warmed up)."""
    if s.backend == "onnx":
        directory = onnx_directory(s.model_id, s.model_cache_dir, s.hub_offline, s.model_revision or None)
        return load_onnx_engine(directory, model_id=s.model_id, decoder=s.decoder, provider=s.onnx_provider,
                          int8=s.onnx_int8, long_audio_seconds=s.long_audio_seconds, shape=warmup_shape(s))
    return load_engine(
        s.model_id, cache_dir=s.model_cache_dir, offline=s.hub_offline, revision=s.model_revision or None,
        decoder=s.decoder, device=s.device,
        precision=s.precision, long_audio_seconds=s.long_audio_seconds,
        local_attention_context=s.local_attention_context, lookahead_ms=s.lookahead_ms,
    )


def warmup_shape(s: Settings) -> WarmupShape:
    """The largest work the server's scheduler hands its engine."""
    return WarmupShape(max_batch=s.microbatch_max_batch, clip_s=s.progressive_piece_s, audio_s=s.max_audio_seconds)


class Application:
    """One server process. Health is NOT_SERVING until `load` has warmed the model, and again from `drain` on."""

    def __init__(
        self, settings: Settings, engine: Engine | None = None, telemetry: Telemetry | None = None
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry or _telemetry(settings)
        self.metrics_port = 0
        self._engine = engine
        self._scheduler: Scheduler | None = None
        self._recognizer: Recognizer | None = None
        self._streamer: Any = None  # the engine's streaming steps; None when it cannot stream
        self._stream_mode = ""
        self._draining = False
        self._closing = asyncio.Event()  # open streams wrap up and send their finals
        self.server = RivaServer(settings, self.recognizer, self.model_parameters, self._closing, self.telemetry)
        self.http = _http_server(settings, self.recognizer, self.telemetry) if settings.http_port else None
        self.wyoming = _wyoming_server(settings, self.recognizer, self.telemetry) if settings.wyoming_port else None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the inference worker."""
        return self._scheduler.queued if self._scheduler else 0

    def recognizer(self) -> Recognizer:
        """The ready core, or `NotReady` with the reason."""
        if self._draining:
            raise NotReady("The server is shutting down; retry on another replica.")
        if self._recognizer is None:
            raise NotReady("The model is still loading; retry shortly.")
        return self._recognizer

    def model_parameters(self) -> dict[str, str]:
        """What `GetRivaSpeechRecognitionConfig` reports about the served model."""
        recognizer = self.recognizer()
        info, s = recognizer.info, self.settings
        streaming = {}
        if self._streamer is not None and self._scheduler is not None:
            streaming = {
                "streaming": "true",
                "streaming_mode": self._stream_mode,
                "chunk_size": f"{self._streamer.chunk_s:g}",
                "ms_per_timestep": f"{info.frame_shift_s * 1000:g}",
                "stop_history_ms": f"{s.stop_history_ms:g}",
                "max_streams": str(self._scheduler.max_streams),
            }
        return {
            "type": "online" if streaming else "offline",
            "language_code": s.language_code,
            "sample_rate": str(info.sample_rate),
            "model_id": info.model_id,
            "architecture": info.architecture,
            "decoder_type": info.decoder,
            "device": info.device,
            "precision": info.precision,
            "max_alternatives": "10" if info.supports_alternatives else "1",
            "max_audio_seconds": f"{s.max_audio_seconds:g}",
            "max_batch_size": str(s.microbatch_max_batch),
            "model_aliases": ",".join(s.served_model_aliases),
            "word_time_offsets": "true",
            **info.extra,
            **({"word_boosting": "true", "max_boost": f"{MAX_BOOST:g}",
                "boost_logprob_per_unit": f"{recognizer.booster.logprob_per_unit:g}"} if recognizer.booster
               else {"word_boosting": "false"}),
            **streaming,
        }

    async def start(self) -> None:
        s = self.settings
        if s.workers == 1:  # one of several worker processes: their parent serves the metrics (`workers`)
            with listening("metrics", s.metrics_host, s.metrics_port, "PARAKEET_METRICS_PORT"):
                self.metrics_port = self.telemetry.metrics.serve(s.metrics_host, s.metrics_port)
        try:
            with listening("gRPC", s.host, s.port, "PARAKEET_PORT"):
                await self.server.start()
            if self.http is not None:
                with listening("the HTTP API", s.http_host, s.http_port, "PARAKEET_HTTP_PORT"):
                    await self.http.start()
            if self.wyoming is not None:
                with listening("the Wyoming server", s.wyoming_host, s.wyoming_port, "PARAKEET_WYOMING_PORT"):
                    await self.wyoming.start()
        except PortUnavailable:  # what did start stops, so the process ends with the one sentence
            await self.server.stop(0)
            if self.http is not None:
                await self.http.stop()
            self.telemetry.close()
            raise
        log.info("grpc server listening",
                 extra={"port": self.port, "tls": s.grpc_tls, "metrics_port": self.metrics_port,
                        "http_port": self.http.port if self.http else 0,
                        "wyoming_port": self.wyoming.port if self.wyoming else 0})

    async def load(self) -> None:
        """Load (unless given) and warm the engine, then report SERVING."""
        s = self.settings
        began = time.monotonic()
        worker, loop = inference_thread(), asyncio.get_running_loop()
        try:
            engine = self._engine or await loop.run_in_executor(worker, engine_for, s)
            if s.warmup:
                await loop.run_in_executor(worker, engine.warmup, warmup_shape(s))
            # On the worker too: building a streamer runs the encoder's subsampling once.
            streamer = self._streamer = await loop.run_in_executor(worker, engine.streamer, s.stream_context_seconds)
            if streamer is not None:
                self._stream_mode = stream_mode(s.stream_mode, streamer.trained_for_streaming)
            # Measuring steps a full batch of streams, so with warm-up on it runs even where the capacity is set.
            measure = streamer is not None and (s.warmup or not s.max_streams)
            measured = await loop.run_in_executor(
                worker, streamer.measure_capacity, engine.sample_rate, s.microbatch_max_batch,
                self._stream_mode == "two_pass",
            ) if measure else 0
            max_streams = 0 if streamer is None else s.max_streams or measured
        except BaseException:
            worker.shutdown(wait=False)
            raise
        self._scheduler = Scheduler(
            engine, window_s=s.microbatch_window_ms / 1000,
            max_batch=s.microbatch_max_batch, capacity=s.queue_capacity, max_wait_s=s.max_queue_wait_s,
            streamer=streamer, max_streams=max_streams, max_stream_lag_s=s.max_stream_lag_s,
            metrics=self.telemetry.metrics, worker=worker,
        )
        await self._scheduler.start()
        geometry = None if streamer is None else streamer.stream_geometry(
            s.stream_step_ms / 1000, self._stream_mode == "two_pass", engine.info.timed_ends)
        self._recognizer = Recognizer(
            self._scheduler, engine.info, model_name=s.served_model_name, model_aliases=s.served_model_aliases,
            language_code=s.language_code,
            max_audio_seconds=s.max_audio_seconds, piece_s=s.progressive_piece_s, geometry=geometry,
            detokenize=engine.detokenize, booster=engine.booster,
            boost_limits=BoostLimits(s.boost_max_phrases, s.boost_max_phrase_chars), telemetry=self.telemetry,
        )
        self._export_model(engine, time.monotonic() - began)
        freeze_loaded_objects()
        if not self._draining:
            await self.server.set_serving(True)
            self.telemetry.metrics.ready.set(1)
        log.info(
            "model ready",
            extra={
                **{k: str(v) for k, v in vars(engine.info).items() if k != "extra"},
                "max_streams": max_streams, "stream_chunk_s": streamer.chunk_s if streamer else None,
                "stream_mode": self._stream_mode or None,
            },
        )

    async def drain(self) -> None:
        """Stop taking work and let in-flight requests finish within the grace period; open streams
        are served until shortly before it ends, then send their finals and close."""
        if self._draining:
            return
        self._draining = True
        grace = self.settings.shutdown_grace_s
        log.info("draining", extra={"grace_s": grace})
        self.telemetry.metrics.ready.set(0)
        await self.server.set_serving(False)
        stopping = asyncio.create_task(self.server.stop(grace))
        wyoming = asyncio.create_task(self.wyoming.stop(grace)) if self.wyoming is not None else None
        done, _ = await asyncio.wait({stopping}, timeout=max(0.0, grace - min(2.0, grace / 4)))
        if not done:
            streams = self._scheduler.active_streams if self._scheduler else 0
            log.info("closing open streams", extra={"streams": streams})
            self._closing.set()
        await stopping
        if wyoming is not None:
            await wyoming
        if self.http is not None:
            await self.http.stop()
        if self._scheduler is not None:
            await self._scheduler.stop()
        self.telemetry.close()
        release_loaded_objects()
        log.info("stopped")

    def _export_model(self, engine: Engine, load_s: float) -> None:
        """The served model's facts and load time as metrics; device memory when on a GPU."""
        metrics, info = self.telemetry.metrics, engine.info
        metrics.model_info.labels(info.model_id, info.decoder, info.device, info.precision).set(1)
        metrics.model_load_seconds.set(load_s)
        memory = engine.gpu_memory()
        if memory is not None:
            metrics.watch_gpu_memory(*memory)


async def serve_until_stopped(settings: Settings, engine: Engine | None = None) -> None:
    """Serve (`engine`, or the one `settings` describe) until SIGTERM or SIGINT, then drain; a load failure ends
    it with its one-line reason."""
    app = Application(settings, engine=engine)
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loading = asyncio.create_task(app.load())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    try:
        if loading.done():
            loading.result()
            await stopping
    finally:
        stopping.cancel()
        await app.drain()
        if not loading.done():
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError, ParakeetError):
                await loading


def stream_mode(setting: str, trained_for_streaming: bool) -> str:
    """The streaming mode `setting` asks for; `auto` keeps the cheap single pass for models trained
    for it and gives models trained with full attention their offline accuracy in the finals."""
    if setting != "auto":
        return setting
    return "cache_aware" if trained_for_streaming else "two_pass"


def _http_server(s: Settings, recognizer: Callable[[], Recognizer], telemetry: Telemetry) -> HttpServer:
    from parakeet_serve.http.app import UploadLimits, create_app
    from parakeet_serve.http.realtime import RealtimeLimits

    token = s.auth_token.get_secret_value() if s.auth_token else None
    origins = [origin.strip() for origin in s.http_cors_origins.split(",") if origin.strip()]
    upload = UploadLimits(s.max_message_bytes, s.http_body_timeout_s)
    realtime = RealtimeLimits(s.stream_idle_timeout_s, s.realtime_max_buffer_bytes)
    app = create_app(recognizer, telemetry, upload=upload, realtime=realtime, token=token, cors_origins=origins)
    return HttpServer(app, s.http_host, s.http_port, header_timeout_s=s.http_header_timeout_s,
                      ws_max_bytes=realtime.max_message_bytes, shared_port=s.workers > 1)


def _wyoming_server(s: Settings, recognizer: Callable[[], Recognizer], telemetry: Telemetry) -> WyomingServer:
    from parakeet_serve.wyoming.server import WyomingLimits, WyomingServer

    limits = WyomingLimits(max_bytes=s.max_message_bytes, idle_s=s.stream_idle_timeout_s)
    return WyomingServer(recognizer, telemetry, limits, host=s.wyoming_host, port=s.wyoming_port,
                         shared_port=s.workers > 1, announce_as=s.wyoming_zeroconf)


def _telemetry(s: Settings) -> Telemetry:
    """Metrics always; traces when an OTLP endpoint is configured."""
    exporter = otlp_exporter(s.otlp_endpoint, s.otlp_protocol) if s.otlp_endpoint else None
    return Telemetry.create(exporter, s.otel_service_name, shared_metrics=s.workers > 1)
