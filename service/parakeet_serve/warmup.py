"""Prove a model answers before traffic arrives: recognise the bundled sample and judge the text.

`parakeet-serve warmup` (the chart's cache-fill hook, the operator's warm-up Job) judges a model it
loads itself; `parakeet-serve transcribe --check` (the chart's `helm test`) judges a running server.
Both use the same sample and the same rule: the demo model must say the sample's words exactly,
any other model must say something.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from parakeet_serve.audio import AudioFormat, decode_audio
from parakeet_serve.engine.loader import DEMO
from parakeet_serve.evaluation import error_counts, normalise
from parakeet_serve.settings import Settings

SAMPLE = "quickstart.wav"


def sample_path() -> Path:
    """The bundled sample every check recognises (its reference text lies beside it as `.txt`)."""
    return Path(str(resources.files("parakeet_serve").joinpath("samples", SAMPLE)))


def expected_text(model_id: str) -> str | None:
    """The words `model_id` must say for the sample; None when any non-empty text will do."""
    return sample_path().with_suffix(".txt").read_text().strip() if model_id == DEMO else None


def judge(transcript: str, expected: str | None, max_wer: float = 0.0) -> str | None:
    """Why `transcript` fails the check, or None. `expected`: the words it must be, within a word error rate
    of `max_wer`; None: any words will do."""
    if expected is not None:
        errors, words, _, _ = error_counts(expected, transcript)
        if errors > max_wer * words:
            return f"the model said {transcript!r} instead of {expected!r} (WER {errors / max(words, 1):.0%})"
    if not normalise(transcript):
        return "the model recognised no words"
    return None


@dataclass(frozen=True)
class WarmupReport:
    """The one JSON line `warmup` prints and leaves as the container's termination message."""

    ok: bool
    model: str
    device: str
    precision: str
    decoder: str
    load_seconds: float
    audio_seconds: float
    transcript: str
    rtf: float
    error: str | None = None

    def json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def run_warmup(settings: Settings, expected: str | None = None, max_wer: float = 0.0) -> WarmupReport:
    """Load the model of `settings` (filling the cache), recognise the sample, judge it against `expected`
    (default: `expected_text` of the model).

    Raises `ParakeetError` (one line) when the model cannot be loaded at all.
    """
    from parakeet_serve.app import engine_for  # torch and NeMo load only here

    began = time.monotonic()
    engine = engine_for(settings)
    load_s = time.monotonic() - began
    audio = decode_audio(sample_path().read_bytes(), AudioFormat(), target_rate=engine.sample_rate,
                         max_seconds=settings.max_audio_seconds).mono()
    engine.warmup()  # lazy initialisation is not the model's speed
    began = time.monotonic()
    transcript = engine.transcribe([audio])[0].best.text
    audio_s = len(audio) / engine.sample_rate
    rtf = (time.monotonic() - began) / audio_s
    error = judge(transcript, expected or expected_text(settings.model_id), max_wer)
    info = engine.info
    return WarmupReport(ok=error is None, model=settings.model_id, device=info.device, precision=info.precision,
                        decoder=info.decoder, load_seconds=round(load_s, 3), audio_seconds=round(audio_s, 3),
                        transcript=transcript, rtf=round(rtf, 4), error=error)


def failed_report(model_id: str, error: str) -> str:
    """The JSON line of a model that did not load."""
    return json.dumps({"ok": False, "model": model_id, "error": error}, separators=(",", ":"))


def leave_termination_message(path: Path, line: str) -> None:
    """Write `line` where Kubernetes reads a container's termination message, when that file exists
    (the kubelet creates it; elsewhere there is nothing to write)."""
    if path.exists():
        path.write_text(line + "\n")
