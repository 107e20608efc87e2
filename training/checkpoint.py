"""A training run's whole state in one file, so that a stopped run continues exactly where it was.

The weights (the Conformer's and the teacher's), the optimiser's moments, the update counts, the
tokenizer, the random state and each worker's place in its data: resuming from it gives the same
weights as never having stopped (`tests/training/test_resume.py`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.blueprint import Blueprint


@dataclass
class Position:
    """Where a worker is in its data: the next batch is batch `index` of epoch `epoch`."""

    epoch: int = 1
    index: int = 0


@dataclass
class Progress:
    """How far the run has come: the phase, the updates done in it, and every worker's position."""

    phase: str = "teacher"  # "teacher", then "conformer", then "done"
    step: int = 0
    positions: list[Position] = field(default_factory=list)
    warm_from: int = 0  # the update the phase's optimiser started at: its warm-up counts from there


@dataclass
class Checkpoint:
    blueprint: Blueprint
    seed: int
    progress: Progress
    model: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # the current phase's
    tokenizer: dict[str, bytes]  # file name -> contents
    rng: list[tuple[torch.Tensor, Any]]  # each worker's torch and Python random states
    batch_seconds: float  # the positions count batches of this much audio


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write atomically: a run killed while saving keeps its previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    # a shallow dict: asdict() would deep-copy every tensor only for torch.save to serialise it
    state = {f.name: getattr(checkpoint, f.name) for f in dataclasses.fields(checkpoint)}
    state.update(blueprint=dataclasses.asdict(checkpoint.blueprint), progress=dataclasses.asdict(checkpoint.progress))
    with open(partial, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())  # on disk before it replaces the last one: a machine crash keeps one whole file
    os.replace(partial, path)


def load(path: Path) -> Checkpoint:
    state = torch.load(path, map_location="cpu", weights_only=False)
    progress = state["progress"]
    progress["positions"] = [Position(**p) for p in progress["positions"]]
    state["progress"] = Progress(**progress)
    state["blueprint"] = Blueprint(**state["blueprint"])
    return Checkpoint(**state)


def tokenizer_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def write_tokenizer(files: dict[str, bytes], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return directory
