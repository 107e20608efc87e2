"""The one validated settings object: every knob is a `PARAKEET_*` variable and a CLI flag.

Settings are built once (in `cli.py`, or by a test) and each component receives the values it
needs; nothing else in the package reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parakeet_serve.errors import SettingsError
from parakeet_serve.host_memory import MAX_RETAIN_MB

ENV_PREFIX = "PARAKEET_"


class Settings(BaseSettings):
    """Configuration of one parakeet-serve process."""

    # Empty variables count as unset: images and charts leave optional ones empty.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True, env_ignore_empty=True,
                                      use_attribute_docstrings=True)

    # --- model -------------------------------------------------------------------------
    model_id: str = "nvidia/parakeet-tdt_ctc-1.1b"
    """Model to serve: a Hugging Face id, a path to a `.nemo` file, or `demo` (bundled)."""
    model_revision: str = ""
    """Hub revision (branch, tag or commit) of the model to pin; empty: the default branch."""
    model_cache_dir: Path | None = None
    """Where hub downloads are cached (the model-cache volume); None uses the hub's default."""
    hub_offline: bool = False
    """Never contact the hub; load only what is already in the cache."""
    backend: Literal["nemo", "onnx"] = "nemo"
    """Inference backend: `nemo` (PyTorch) or `onnx` (ONNX Runtime on a `parakeet-serve export` directory or
    a hub repository in onnx-asr's layout, given as the model; it streams when the directory has the
    export's streaming graphs)."""
    onnx_provider: Literal["auto", "cpu", "cuda", "tensorrt"] = "auto"
    """ONNX Runtime's execution provider; `auto` is CUDA when onnxruntime-gpu sees a GPU, else the CPU."""
    onnx_int8: bool = False
    """Run the export's int8 graphs (`parakeet-serve export --int8`)."""
    decoder: Literal["auto", "tdt", "rnnt", "ctc"] = "auto"
    """Decoder head: `auto` takes the transducer of a hybrid model; `ctc` its CTC head."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the model runs; `auto` picks CUDA when present."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Inference precision; `auto` is bf16 on CUDA (fp16 where bf16 is missing) and fp32 on CPU. On a CPU
    with AVX512-BF16 or AMX, `bf16` runs the demo model 1.2-1.4x faster at the same accuracy (without them, slower:
    4x on an AVX2-only CPU); bf16 stores the weights in bf16. fp16 needs CUDA."""
    language_code: str = "en-US"
    """Language of the served model, matched against `RecognitionConfig.language_code`."""
    model_name: str = ""
    """Name clients may put in `RecognitionConfig.model`; empty derives one from the model id."""
    model_aliases: str = Field("", max_length=2000, pattern=r"^[^\s]*$")
    """Other names clients may ask for, comma-separated (no spaces): e.g. `whisper-1` for apps that hard-code
    OpenAI's model name."""
    warmup: bool = True
    """Transcribe a short clip at start, before health reports SERVING."""
    long_audio_seconds: float = Field(480.0, gt=0)
    """Audio longer than this is encoded with local attention so memory grows linearly."""
    local_attention_context: int = Field(128, ge=16, le=1024)
    """Frames of left and right context for local attention on long audio."""
    workers: int = Field(1, ge=1, le=64)
    """Server processes sharing the ports (`SO_REUSEPORT`: the kernel spreads connections among them), each
    with its own copy of the model and inference thread, their metrics served summed by a parent process. One
    event loop answers about 1,200 small `Recognize` requests a second (loadtest/README.md); more processes
    go past that where many clients connect. A single connection stays with one process."""
    host_memory_retain_mb: int = Field(1024, ge=0, le=MAX_RETAIN_MB)
    """Freed host memory blocks up to this size (MB, at most 2047) stay in the process for the next batch
    instead of going back to the kernel and faulting in again (glibc only); 0 keeps glibc's adaptive default."""

    # --- limits and batching -----------------------------------------------------------------
    max_audio_seconds: float = Field(600.0, gt=0, le=36000)
    """Longest audio accepted by `Recognize`, in seconds."""
    max_upload_mb: int = Field(64, ge=1, le=2047)
    """Largest gRPC message accepted, in MiB; also the most audio one Wyoming utterance may hold."""
    microbatch_window_ms: float = Field(8.0, ge=0, le=1000)
    """How long the batcher waits for more work once it has some."""
    microbatch_max_batch: int = Field(32, ge=1, le=1024)
    """Most items in one inference batch."""
    queue_max_factor: int = Field(4, ge=1, le=1000)
    """The queue holds `queue_max_factor * microbatch_max_batch` items; more are refused."""
    max_queue_wait_s: float = Field(30.0, gt=0)
    """Work that waited longer than this is dropped before it costs compute."""
    boost_max_phrases: int = Field(1000, ge=1, le=100000)
    """Most phrases one request may boost (`speech_contexts`); more are refused with INVALID_ARGUMENT."""
    boost_max_phrase_chars: int = Field(100, ge=1, le=10000)
    """Longest phrase one request may boost, in characters."""
    progressive_piece_s: float = Field(30.0, ge=3, le=600)
    """A transcription answered as it progresses (HTTP `stream=true`) is recognised in pieces of at most
    this many seconds, cut at pauses: shorter pieces give the first text sooner."""

    # --- streaming --------------------------------------------------------------------------
    stream_step_ms: float = Field(320.0, ge=10, le=5000)
    """Interim results come this often; rounded up to whole encoder chunks of the model."""
    stream_context_seconds: float = Field(10.0, ge=0.5, le=60)
    """Left attention context of a stream, for models trained with full attention."""
    stream_mode: Literal["auto", "cache_aware", "two_pass"] = "auto"
    """How streams are recognised. `cache_aware`: each frame encoded once, finals from the streamed pass
    (exact for models trained for it). `two_pass`: interims from that pass, and each final recognised
    again offline on its utterance's audio (equal to `Recognize` on it). `auto`: `cache_aware` for models
    trained with chunked attention, `two_pass` for models trained with full attention (Parakeet's)."""
    lookahead_ms: float | None = Field(None, ge=0)
    """For models trained with several look-aheads (NVIDIA's cache-aware multi-look-ahead
    FastConformers, e.g. 0, 80, 480, 1040 ms): the one served, streamed and offline alike (less is
    sooner text, more is more accurate). Unset: the model's first."""
    max_streams: int = Field(0, ge=0, le=100000)
    """Most streams open at once; more are refused. 0 measures what the device holds in real time at warm-up."""
    max_stream_lag_s: float = Field(1.0, ge=0, le=60)
    """New streams are refused while the streams held fall behind real time: while the median lag of the stream
    steps of the last 10 s passes this (0: never). Admission so follows what the machine really keeps up with
    after start-up, whatever was measured then."""
    stop_history_ms: float = Field(800.0, ge=80, le=10000)
    """Silence that ends an utterance when the client's `endpointing_config.stop_history` is unset."""
    stream_idle_timeout_s: float = Field(60.0, ge=0, le=86400)
    """A stream (gRPC, realtime WebSocket or Wyoming utterance) that sends nothing for this long is ended, freeing
    its slot (gRPC OUT_OF_RANGE, an `error` event on the socket or connection); 0 never ends one."""
    realtime_max_buffer_mib: float = Field(15.0, gt=0, le=1024)
    """Audio one realtime socket may hold not yet transcribed, in MiB (OpenAI's limit for one append: 327 s of
    24 kHz PCM); an append past it is refused with an `input_audio_buffer_full` error event."""

    # --- gRPC server ----------------------------------------------------------------------
    host: str = "[::]"
    """Address the gRPC server binds."""
    port: int = Field(50051, ge=0, le=65535, validation_alias=AliasChoices("PARAKEET_PORT", "PORT", "port"))
    """gRPC port (Riva's is 50051); 0 picks a free one."""
    grpc_tls: bool = False
    """Serve TLS; needs `grpc_cert` and `grpc_key`."""
    grpc_cert: Path | None = None
    """PEM certificate chain of the server; reloaded when the file changes."""
    grpc_key: Path | None = None
    """PEM private key of the server; reloaded when the file changes."""
    grpc_client_ca: Path | None = None
    """PEM bundle of CAs trusted for client certificates; set it to require mutual TLS."""
    auth_token: SecretStr | None = None
    """When set, every RPC needs `authorization: Bearer <token>` metadata."""
    keepalive_time_s: float = Field(30.0, gt=0)
    """Interval of server keepalive pings on idle connections."""
    keepalive_timeout_s: float = Field(10.0, gt=0)
    """How long a keepalive ping may go unanswered before the connection is closed."""
    shutdown_grace_s: float = Field(30.0, ge=0)
    """On SIGTERM, how long in-flight requests may run before they are cancelled."""
    max_connection_age_s: float = Field(0.0, ge=0)
    """Connections older than this are asked to reconnect (GOAWAY), so long-lived clients rebalance
    across replicas; 0 never asks."""
    max_connection_age_grace_s: float = Field(0.0, ge=0)
    """After that request, how long a connection's open calls may go on before it is closed; 0 waits
    for them however long they take."""
    http_port: int = Field(0, ge=0, le=65535)
    """Port of the OpenAI-compatible HTTP API (`/v1/audio/transcriptions`); 0 serves none."""
    http_host: str = "0.0.0.0"
    """Address the HTTP API binds."""
    http_header_timeout_s: float = Field(20.0, gt=0, le=3600)
    """A request's headers must arrive within this long of the connection opening (or of the last response on
    it); a slower client (slowloris) is answered 408 and closed."""
    http_body_timeout_s: float = Field(30.0, gt=0, le=3600)
    """An upload whose body stalls for this long is refused with 408."""
    http_cors_origins: str = ""
    """Comma-separated origins browsers may call the HTTP API from (`*` for any); empty: no CORS headers."""
    wyoming_port: int = Field(0, ge=0, le=65535)
    """Port of the Wyoming protocol server, for Home Assistant's voice pipeline and other Wyoming clients (their
    usual speech-to-text port is 10300); 0 serves none."""
    wyoming_host: str = "0.0.0.0"
    """Address the Wyoming server binds."""
    wyoming_zeroconf: str = ""
    """Name to announce the Wyoming server under over mDNS (`_wyoming._tcp`), so Home Assistant discovers it on
    the local network; empty announces nothing."""
    health_port: int = Field(0, ge=0, le=65535)
    """Extra plaintext port serving only `grpc.health.v1` (for kubelet probes, which cannot speak TLS);
    0 serves none."""

    # --- observability -------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Level of the structured JSON log."""
    metrics_host: str = "0.0.0.0"
    """Address of the Prometheus `/metrics` endpoint."""
    metrics_port: int = Field(9400, ge=0, le=65535)
    """Port of the Prometheus `/metrics` endpoint; 0 picks a free one."""
    otlp_endpoint: str = Field(
        "", validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "PARAKEET_OTLP_ENDPOINT", "otlp_endpoint")
    )
    """OpenTelemetry collector to send traces to (e.g. http://collector:4317); empty turns tracing off."""
    otlp_protocol: Literal["grpc", "http/protobuf"] = Field(
        "grpc", validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_PROTOCOL", "PARAKEET_OTLP_PROTOCOL", "otlp_protocol")
    )
    """OTLP transport: `grpc` (port 4317) or `http/protobuf` (port 4318)."""
    otel_service_name: str = Field(
        "parakeet-serve",
        validation_alias=AliasChoices("OTEL_SERVICE_NAME", "PARAKEET_OTEL_SERVICE_NAME", "otel_service_name"),
    )
    """`service.name` of the traces."""

    @model_validator(mode="after")
    def _tls_files_present(self) -> Settings:
        if self.grpc_tls and (self.grpc_cert is None or self.grpc_key is None):
            raise ValueError("PARAKEET_GRPC_TLS=true needs PARAKEET_GRPC_CERT and PARAKEET_GRPC_KEY")
        if self.grpc_client_ca is not None and not self.grpc_tls:
            raise ValueError("PARAKEET_GRPC_CLIENT_CA needs PARAKEET_GRPC_TLS=true")
        if self.backend == "onnx" and self.precision not in ("auto", "fp32"):
            raise ValueError(f"PARAKEET_PRECISION={self.precision} applies to the nemo backend; the onnx backend "
                             "runs fp32, or int8 with PARAKEET_ONNX_INT8=true")
        if self.onnx_int8 and self.backend != "onnx":
            raise ValueError("PARAKEET_ONNX_INT8=true needs PARAKEET_BACKEND=onnx")
        if self.workers > 1 and (self.port == 0 or self.metrics_port == 0):
            raise ValueError("PARAKEET_WORKERS > 1 needs fixed ports (PARAKEET_PORT, PARAKEET_METRICS_PORT): "
                             "processes on port 0 would each get a different one")
        if self.health_port and self.health_port == self.port:
            raise ValueError(f"PARAKEET_HEALTH_PORT={self.health_port} is the gRPC port; pick another or 0")
        for name in ("grpc_cert", "grpc_key", "grpc_client_ca"):
            path = getattr(self, name)
            if path is not None and self.grpc_tls and not path.is_file():
                raise ValueError(f"{env_name(name)}={path}: no such file")
        return self

    @property
    def served_model_name(self) -> str:
        """The name clients see in `GetRivaSpeechRecognitionConfig` and may ask for."""
        if self.model_name:
            return self.model_name
        return Path(self.model_id).stem if self.model_id.endswith(".nemo") else self.model_id.split("/")[-1]

    @property
    def served_model_aliases(self) -> tuple[str, ...]:
        return tuple(name for name in self.model_aliases.split(",") if name)

    @property
    def max_message_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def realtime_max_buffer_bytes(self) -> int:
        return round(self.realtime_max_buffer_mib * 1024 * 1024)

    @property
    def queue_capacity(self) -> int:
        return self.queue_max_factor * self.microbatch_max_batch


_OWN_NAMES = {
    "port": "PORT",
    "otlp_endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
    "otlp_protocol": "OTEL_EXPORTER_OTLP_PROTOCOL",
    "otel_service_name": "OTEL_SERVICE_NAME",
}


def env_name(field: str) -> str:
    """The environment variable of a settings field (the standard name where one exists)."""
    return _OWN_NAMES.get(field, ENV_PREFIX + field.upper())


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit values (CLI flags, tests) taking precedence.

    Raises `SettingsError` with one line per bad value: the variable, the value and what is expected.
    """
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        message = err["msg"].removeprefix("Value error, ")
        if field:
            lines.append(f"{env_name(field)}={err.get('input')!r}: {message}")
        else:
            lines.append(message)
    return "invalid settings: " + "; ".join(lines)
