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


def transcribe_file(path: Path, options: ClientOptions) -> list[str]:
    """Recognise a whole file (its container is sniffed by the server); lines to print."""
    config = riva.client.RecognitionConfig(
        language_code=options.language_code,
        max_alternatives=options.max_alternatives,
        enable_automatic_punctuation=options.punctuation,
        enable_word_time_offsets=options.word_times,
    )
    response = connect(options).offline_recognize(path.read_bytes(), config)
    lines = []
    for result in response.results:
        for rank, alternative in enumerate(result.alternatives):
            prefix = "" if rank == 0 else f"[alt {rank}] "
            lines.append(prefix + alternative.transcript)
            lines.extend(
                f"  {w.start_time / 1000:8.2f} {w.end_time / 1000:8.2f}  {w.confidence:.2f}  {w.word}"
                for w in alternative.words
            )
    return lines


def rpc_error_text(exc: Any) -> str:
    """A failed call as `CODE: the server's sentence` (anything else as its own text)."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return str(exc)
