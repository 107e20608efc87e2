"""The model engine: load a NeMo ASR model and recognise batches of audio."""

from __future__ import annotations

from pathlib import Path

from parakeet_serve.engine.loader import DEMO, load_nemo_model, quiet_nemo, resolve_model_file
from parakeet_serve.engine.nemo_engine import NemoEngine
from parakeet_serve.engine.types import Hypothesis, ModelInfo, Transcript, Word

__all__ = ["DEMO", "Hypothesis", "ModelInfo", "NemoEngine", "Transcript", "Word", "load_engine"]


def load_engine(
    model_id: str,
    *,
    cache_dir: Path | None = None,
    offline: bool = False,
    revision: str | None = None,
    decoder: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    long_audio_seconds: float = 480.0,
    local_attention_context: int = 128,
) -> NemoEngine:
    """Resolve, load and prepare `model_id` for inference (not yet warmed up)."""
    quiet_nemo()
    model = load_nemo_model(resolve_model_file(model_id, cache_dir, offline, revision))
    return NemoEngine(
        model,
        model_id=model_id,
        decoder=decoder,
        device=device,
        precision=precision,
        long_audio_seconds=long_audio_seconds,
        local_attention_context=local_attention_context,
    )
