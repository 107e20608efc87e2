"""Prometheus metrics of one server process, in a registry of its own.

Names are prefixed `parakeet_`; labels are bounded (RPC names, gRPC codes, work kinds, rejection
reasons, model facts), never per request or per stream. The dashboards and rules in `dashboards/`
use exactly these names; the end-to-end test checks that they exist.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from parakeet_serve.errors import NotReady, QueueFull, QueueTimeout, StreamLimit, StreamsBehind

REFRESH_S = 0.5  # how stale a worker process's live gauges may be in the summed metrics
RTF_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
QUEUE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INTERIM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0)
LAG_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
FINAL_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0)

RPCS = ("Recognize", "StreamingRecognize", "GetRivaSpeechRecognitionConfig")
TRANSCRIPTIONS = "Transcriptions"  # HTTP's /v1/audio/transcriptions, in the audio, duration and RTF families
WYOMING = "Wyoming"  # a Wyoming utterance, counted as an RPC under the same status names
# The status codes the service answers with (UNAUTHENTICATED comes from the auth interceptor, before metrics).
CODES = ("OK", "CANCELLED", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL")

# Admission refusals by the error that carried them (most specific first).
_REJECTIONS: tuple[tuple[type[Exception], str], ...] = (
    (StreamsBehind, "streams_behind"),
    (StreamLimit, "max_streams"),
    (QueueFull, "queue_full"),
    (QueueTimeout, "queue_timeout"),
    (NotReady, "not_ready"),
)


class Metrics:
    """The service's collectors. Each process (or test server) owns one, with its own registry. With `shared`
    (one of several worker processes, prometheus_client in multiprocess mode) the values go to the files their
    parent process serves summed (`serve_shared`), and the gauges read from the service are refreshed every
    `REFRESH_S` rather than at each scrape; each gauge says how the processes' values combine."""

    def __init__(self, shared: bool = False) -> None:
        self.registry = r = CollectorRegistry()
        self._shared = shared
        self._live: list[tuple[Gauge, Callable[[], float]]] = []
        self._refresher: threading.Thread | None = None
        self.requests = Counter("parakeet_requests", "Finished RPCs by method and gRPC status code.",
                                ["rpc", "code"], registry=r)
        self.http_requests = Counter("parakeet_http_requests", "Finished HTTP API requests by route and status.",
                                     ["route", "status"], registry=r)
        self.audio_seconds = Counter("parakeet_audio_seconds", "Seconds of audio recognised (streams as they go).",
                                     ["rpc"], registry=r)
        self.inference_seconds = Counter("parakeet_inference_seconds", "Seconds the inference thread was busy.",
                                         ["kind"], registry=r)
        self.encoder_input_seconds = Counter(
            "parakeet_encoder_input_seconds",
            "Seconds of input the encoder saw for streams, context included (compute amplification's numerator).",
            registry=r)
        self.rejections = Counter("parakeet_admission_rejections", "Work refused by admission control, by reason.",
                                  ["reason"], registry=r)
        self.real_time_factor = Histogram(
            "parakeet_real_time_factor", "Processing seconds per audio second of each request or stream.",
            ["rpc"], buckets=RTF_BUCKETS, registry=r)
        self.request_duration = Histogram("parakeet_request_duration_seconds", "Wall time of unary RPCs.",
                                          ["rpc"], buckets=REQUEST_BUCKETS, registry=r)
        self.queue_wait = Histogram("parakeet_queue_wait_seconds", "Time work waited for the inference thread.",
                                    ["kind"], buckets=QUEUE_BUCKETS, registry=r)
        self.batch_size = Histogram("parakeet_batch_size", "Items in each inference batch.",
                                    ["kind"], buckets=BATCH_BUCKETS, registry=r)
        self.inference_duration = Histogram("parakeet_inference_duration_seconds", "Wall time of each batch.",
                                            ["kind"], buckets=INFERENCE_BUCKETS, registry=r)
        self.interim_latency = Histogram("parakeet_interim_latency_seconds",
                                         "Arrival of the audio an interim result covers -> the interim result.",
                                         buckets=INTERIM_BUCKETS, registry=r)
        self.final_latency = Histogram("parakeet_final_latency_seconds",
                                       "End of speech -> its final result (endpointing silence included), from "
                                       "when the speech ended as a real-time client said it, not when it was read.",
                                       buckets=FINAL_BUCKETS, registry=r)
        self.stream_lag = Histogram("parakeet_stream_lag_seconds",
                                    "How long after it was said a stream's newest audio had been processed, each "
                                    "step: how far behind real time the stream runs.", buckets=LAG_BUCKETS, registry=r)
        self.active_streams = Gauge("parakeet_active_streams", "Streams open now.", registry=r,
                                    multiprocess_mode="livesum")
        self.max_streams = Gauge("parakeet_max_streams", "Streams this server admits at once.", registry=r,
                                 multiprocess_mode="livesum")
        self.queue_depth = Gauge("parakeet_queue_depth", "Recognize work waiting for the inference thread.",
                                 registry=r, multiprocess_mode="livesum")
        self.queue_capacity = Gauge("parakeet_queue_capacity", "Recognize work the queue holds before refusing.",
                                    registry=r, multiprocess_mode="livesum")
        self.ready = Gauge("parakeet_ready", "1 while the model is loaded and warmed and the server not draining.",
                           registry=r, multiprocess_mode="livemin")  # ready when every process is
        self.model_info = Gauge("parakeet_model_info", "The served model (always 1).",
                                ["model_id", "decoder", "device", "precision"], registry=r,
                                multiprocess_mode="livemax")
        self.model_load_seconds = Gauge("parakeet_model_load_seconds", "Time the model took to load and warm up.",
                                        registry=r, multiprocess_mode="livemax")
        self._server: Any = None
        self._gpu = _GpuMemory()  # declared everywhere, with samples only once a GPU is watched
        r.register(self._gpu)
        self._initialise_series()

    def _initialise_series(self) -> None:
        """Create the known label sets at 0, so the first event is a change that rate() sees."""
        for rpc in (*RPCS, WYOMING):
            for code in CODES:
                self.requests.labels(rpc, code)
        for rpc in (*RPCS[:2], TRANSCRIPTIONS, WYOMING):
            self.audio_seconds.labels(rpc)
            self.real_time_factor.labels(rpc)
        for rpc in (RPCS[0], RPCS[2], TRANSCRIPTIONS, WYOMING):
            self.request_duration.labels(rpc)
        for kind in ("offline", "stream", "final"):
            for family in (self.inference_seconds, self.queue_wait, self.batch_size, self.inference_duration):
                family.labels(kind)
        for _, reason in _REJECTIONS:
            self.rejections.labels(reason)

    def bind_queue(self, active_streams: Callable[[], float], max_streams: float, queue_depth: Callable[[], float],
                   queue_capacity: float) -> None:
        """Read the scheduler's live figures at each scrape."""
        self._read_live(self.active_streams, active_streams)
        self._read_live(self.queue_depth, queue_depth)
        self.max_streams.set(max_streams)
        self.queue_capacity.set(queue_capacity)

    def watch_gpu_memory(self, allocated: Callable[[], int], reserved: Callable[[], int]) -> None:
        """Export CUDA memory in use, read at each scrape (summed over worker processes: the device's use)."""
        if not self._shared:
            self._gpu.readers = (allocated, reserved)
            return
        for (name, text), read in zip(_GPU_MEMORY.items(), (allocated, reserved), strict=True):
            # the files hold only metric objects' values: a collector's samples would not reach them
            self._read_live(Gauge(name, text, registry=None, multiprocess_mode="livesum"), read)

    def _read_live(self, gauge: Gauge, read: Callable[[], float]) -> None:
        if not self._shared:
            gauge.set_function(read)
            return
        self._live.append((gauge, read))
        if self._refresher is None:
            self._refresher = threading.Thread(target=self._refresh, name="metrics-refresh", daemon=True)
            self._refresher.start()

    def _refresh(self) -> None:
        while True:
            for gauge, read in list(self._live):
                gauge.set(read())
            time.sleep(REFRESH_S)

    def count_rejection(self, exc: BaseException) -> None:
        for kind, reason in _REJECTIONS:
            if isinstance(exc, kind):
                self.rejections.labels(reason).inc()
                return

    def serve(self, host: str, port: int) -> int:
        """Serve `/metrics` over HTTP in a thread; returns the bound port (useful with port 0)."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def serve_shared(host: str, port: int, directory: str) -> Any:
    """Serve `/metrics` summed over the worker processes writing to `directory`; the HTTP server, in a thread."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server


_GPU_MEMORY = {"parakeet_gpu_memory_allocated_bytes": "CUDA memory held by tensors.",
                "parakeet_gpu_memory_reserved_bytes": "CUDA memory reserved by the allocator."}


class _GpuMemory(Collector):
    def __init__(self) -> None:
        self.readers: tuple[Callable[[], int], Callable[[], int]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        allocated, reserved = (GaugeMetricFamily(name, text) for name, text in _GPU_MEMORY.items())
        if self.readers is not None:
            allocated.add_metric([], self.readers[0]())
            reserved.add_metric([], self.readers[1]())
        yield allocated
        yield reserved
