"""The model engines: load a model and recognise batches of audio (NeMo, or ONNX Runtime).

The core (interfaces, types, words, features, the streaming core) is this package's modules; each backend is a
wing of its own (`nemo/`, `onnx/`), reached from outside only through this module. PyTorch and NeMo are imported
only when a NeMo engine is asked for, so the ONNX backend runs without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from parakeet_serve.engine.loader import DEMO, load_nemo_model, quiet_nemo, resolve_model_file
from parakeet_serve.engine.types import Hypothesis, ModelInfo, Transcript, Word

if TYPE_CHECKING:
    from parakeet_serve.engine.nemo.engine import NemoEngine
    from parakeet_serve.engine.onnx.engine import OnnxEngine

__all__ = ["DEMO", "Hypothesis", "ModelInfo", "NemoEngine", "Transcript", "Word", "export_onnx", "load_engine",
           "load_onnx_engine"]


def __getattr__(name: str) -> Any:
    if name == "NemoEngine":
        from parakeet_serve.engine.nemo.engine import NemoEngine

        return NemoEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_engine(model_id: str, *, cache_dir: Path | None = None, offline: bool = False, revision: str | None = None,
                **options: Any) -> NemoEngine:
    """Resolve, load and prepare `model_id` for inference, not yet warmed up (`NemoEngine`'s options: decoder,
    device, precision, long-audio attention, look-ahead)."""
    from parakeet_serve.engine.nemo.engine import NemoEngine

    quiet_nemo()
    model = load_nemo_model(resolve_model_file(model_id, cache_dir, offline, revision))
    return NemoEngine(model, model_id=model_id, **options)


def load_onnx_engine(directory: Path, **options: Any) -> OnnxEngine:
    """The ONNX Runtime engine of an exported directory (`OnnxEngine`'s options)."""
    from parakeet_serve.engine.onnx.engine import OnnxEngine

    return OnnxEngine(directory, **options)


def export_onnx(model_id: str, out: Path, **options: Any) -> list[Path]:
    """`parakeet-serve export`: `model_id` as ONNX graphs in `out` (the NeMo backend's exporter)."""
    from parakeet_serve.engine.nemo.export import export

    return export(model_id, out, **options)
