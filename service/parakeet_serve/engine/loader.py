"""Find a model (bundled demo, local `.nemo` file or Hugging Face id) and load it with NeMo."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

from parakeet_serve.errors import ModelLoadError

log = logging.getLogger(__name__)

DEMO = "demo"
# Trained by training/ (see training/README.md): the demo model, trained for cache-aware streaming,
# and its offline-trained twin (full attention, as Parakeet's checkpoints), for streaming such models.
BUNDLED = {DEMO: "demo.nemo", "demo-offline": "demo-offline.nemo"}


def quiet_nemo() -> None:
    """NeMo's own INFO/WARNING lines are not JSON and tell an operator nothing; keep its errors."""
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)


def resolve_model_file(model_id: str, cache_dir: Path | None, offline: bool, revision: str | None = None) -> Path:
    """The local `.nemo` file for `model_id` (at `revision` on the hub), downloading it into `cache_dir` when needed."""
    if model_id in BUNDLED:
        return _bundled_file(model_id)
    path = Path(model_id).expanduser()
    if path.suffix == ".nemo" or path.exists():
        if not path.is_file():
            raise ModelLoadError(f"Model file {path} does not exist; set PARAKEET_MODEL_ID to a .nemo file.")
        return path
    return _from_hub(model_id, cache_dir, offline, revision)


def load_nemo_model(path: Path, map_location: str = "cpu") -> Any:
    """Restore any NeMo ASR model; the class is read from the file's own config."""
    from nemo.collections.asr.models import ASRModel

    try:
        return ASRModel.restore_from(str(path), map_location=map_location)
    except Exception as exc:  # NeMo raises many kinds; the operator needs one line
        raise ModelLoadError(f"Cannot load model file {path}: {type(exc).__name__}: {_one_line(exc)}") from exc


def _from_hub(model_id: str, cache_dir: Path | None, offline: bool, revision: str | None) -> Path:
    folder = _hub_snapshot(model_id, cache_dir, offline, revision, ["*.nemo"], "a local .nemo file")
    files = sorted(folder.glob("*.nemo"))
    if not files:
        raise ModelLoadError(f"Model {model_id} on the hub holds no .nemo file; it is not a NeMo ASR model.")
    return files[0]


def _hub_snapshot(model_id: str, cache_dir: Path | None, offline: bool, revision: str | None,
                  patterns: list[str], local_kind: str) -> Path:
    """The cached snapshot of the files of `model_id` matching `patterns`, downloaded when needed."""
    from huggingface_hub import constants, snapshot_download

    cache = cache_dir or Path(constants.HF_HUB_CACHE)
    try:
        return Path(snapshot_download(repo_id=model_id, revision=revision, cache_dir=cache,
                                      allow_patterns=patterns, local_files_only=offline))
    except Exception as exc:  # offline, unknown repository, permissions: all end the start-up
        reason = "the hub is disabled (PARAKEET_HUB_OFFLINE)" if offline else f"the hub failed: {_one_line(exc)}"
        raise ModelLoadError(
            f"Model {model_id} is not in the cache {cache} and {reason}; fix: run once with hub access "
            f"to fill the cache, copy the model there, or set PARAKEET_MODEL_ID to {local_kind}."
        ) from exc


def _bundled_file(model_id: str) -> Path:
    packaged = resources.files("parakeet_serve").joinpath("models", BUNDLED[model_id])
    if not packaged.is_file():
        raise ModelLoadError(
            f"The {model_id} model is not in this installation; rebuild it with `python -m training.build` "
            "from a source checkout, or set PARAKEET_MODEL_ID to another model."
        )
    return Path(str(packaged))


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def onnx_directory(model_id: str, cache_dir: Path | None = None, offline: bool = False,
                   revision: str | None = None) -> Path:
    """The ONNX model directory `model_id` names: a local directory (as `parakeet-serve export` writes
    it) or a hub repository in onnx-asr's layout (its graphs, vocabulary and config are fetched)."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        return path
    if model_id in BUNDLED or path.suffix == ".nemo" or path.exists():
        raise ModelLoadError(f"PARAKEET_BACKEND=onnx serves an ONNX model directory, and {model_id!r} is not "
                             f"one; write one with `parakeet-serve export --model {model_id} --out DIR`.")
    folder = _hub_snapshot(model_id, cache_dir, offline, revision, ["*.onnx", "*.onnx.data", "vocab.txt",
                                                                    "config.json"], "a local ONNX directory")
    if not (folder / "vocab.txt").is_file():
        raise ModelLoadError(f"Model {model_id} on the hub has no vocab.txt; it is not in onnx-asr's layout.")
    return folder
