"""A small Riva client for the `transcribe` command, built on `nvidia-riva-client`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import riva.client


@dataclass(frozen=True)
class ClientOptions:
    server: str = "localhost:50051"
    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None
    language_code: str = "en-US"
    punctuation: bool = True
    word_times: bool = False
    max_alternatives: int = 1
    encoding: str = ""  # headerless audio: "pcm" (16-bit little-endian), "mulaw" or "alaw"; empty: sniffed
    sample_rate: int = 0  # of headerless audio
    channels: int = 1  # of headerless audio

    def __post_init__(self) -> None:
        if self.encoding and self.sample_rate <= 0:
            raise ValueError(f"headerless {self.encoding} audio needs its sample rate (--rate)")


_ENCODINGS = {"pcm": riva.client.AudioEncoding.LINEAR_PCM, "mulaw": riva.client.AudioEncoding.MULAW,
              "alaw": riva.client.AudioEncoding.ALAW}
WORDS_HEADER = "   start_s    end_s  conf  word"


def connect(options: ClientOptions) -> riva.client.ASRService:
    metadata = [["authorization", f"Bearer {options.token}"]] if options.token else None
    auth = riva.client.Auth(
        ssl_root_cert=str(options.ca) if options.ca else None,
        use_ssl=options.tls or options.ca is not None,
        uri=options.server,
        metadata_args=metadata,
        ssl_client_cert=str(options.cert) if options.cert else None,
        ssl_client_key=str(options.key) if options.key else None,
    )
    return riva.client.ASRService(auth)


def recognize_file(path: Path, options: ClientOptions, asr: riva.client.ASRService | None = None) -> Any:
    """Recognise a whole file (its container is sniffed by the server); the `RecognizeResponse`."""
    config = riva.client.RecognitionConfig(
        language_code=options.language_code,
        max_alternatives=options.max_alternatives,
        enable_automatic_punctuation=options.punctuation,
        enable_word_time_offsets=options.word_times,
    )
    if options.encoding:
        config.encoding = _ENCODINGS[options.encoding]
        config.sample_rate_hertz, config.audio_channel_count = options.sample_rate, options.channels
    return (asr or connect(options)).offline_recognize(path.read_bytes(), config)


def transcript_of(response: Any) -> str:
    """The best hypothesis of every result, joined."""
    return " ".join(r.alternatives[0].transcript for r in response.results if r.alternatives).strip()


def response_lines(response: Any) -> list[str]:
    """A response as lines to print: hypotheses, and word times when there are any."""
    lines = []
    for result in response.results:
        for rank, alternative in enumerate(result.alternatives):
            prefix = "" if rank == 0 else f"[alt {rank}] "
            lines.append(prefix + alternative.transcript)
            if alternative.words:
                lines.append(WORDS_HEADER)
            lines.extend(
                f"  {w.start_time / 1000:8.2f} {w.end_time / 1000:8.2f}  {w.confidence:.2f}  {w.word}"
                for w in alternative.words
            )
    return lines


def transcribe_file(path: Path, options: ClientOptions) -> list[str]:
    """Recognise a whole file; lines to print."""
    return response_lines(recognize_file(path, options))


def served_model(asr: riva.client.ASRService) -> str:
    """The model id the server reports, after checking that its health is SERVING.

    Raises `RuntimeError` with one sentence when the server is not ready.
    """
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from riva.client.proto import riva_asr_pb2

    metadata = asr.auth.get_auth_metadata()
    status = health_pb2_grpc.HealthStub(asr.auth.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    if status.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)
        raise RuntimeError(f"the server's health is {name}, not SERVING")
    config = asr.stub.GetRivaSpeechRecognitionConfig(
        riva_asr_pb2.RivaSpeechRecognitionConfigRequest(), metadata=metadata, timeout=10
    )
    if not config.model_config:
        raise RuntimeError("the server lists no model")
    return config.model_config[0].parameters["model_id"]


def rpc_error_text(exc: Any) -> str:
    """A failed call as `CODE: the server's sentence` (anything else as its own text)."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return str(exc)
