"""What every inference backend offers the server: the one interface behind `PARAKEET_BACKEND`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from parakeet_serve.boosting import WordBoost
from parakeet_serve.engine.types import ModelInfo, Recognition, Transcript


class Engine(Protocol):
    info: ModelInfo
    sample_rate: int
    frame_shift_s: float
    booster: Any  # its word boosting (`recognizer.Booster`), or None when it cannot boost

    def transcribe(self, audios: Sequence[np.ndarray], alternatives: Sequence[int] | None = None,
                   boosts: Sequence[WordBoost | None] | None = None) -> list[Transcript]:
        """Recognise a batch of mono float32 audio at `sample_rate` (on the inference thread)."""
        ...

    def recognise(self, audios: Sequence[np.ndarray], alternatives: Sequence[int] | None = None,
                  boosts: Sequence[WordBoost | None] | None = None) -> list[Recognition]:
        """As `transcribe`, but each greedy transcript's text and words are left to build (by its
        `transcript()`, on any thread, without the model): the scheduler builds them while the
        inference thread runs the next batch."""
        ...

    def encode(self, audios: Sequence[np.ndarray]) -> int:
        """Featurise and encode a batch as `transcribe` does, without decoding: the compute ceiling the
        bench compares recognition with. Returns the encoder frames made (having waited for them)."""
        ...

    def warmup(self) -> None:
        """Run the whole path once, so the first request pays no lazy initialisation."""
        ...

    def detokenize(self, ids: list[int]) -> str:
        ...

    def streamer(self, left_context_s: float) -> Any:
        """Its streaming steps (`engine.streaming.Streamer`), or None when it serves `Recognize` only."""
        ...

    def gpu_memory(self) -> tuple[Callable[[], int], Callable[[], int]] | None:
        """Readers of (allocated, reserved) device memory in bytes, when it runs on a GPU it can measure."""
        ...


# On a CPU a batch costs as much as its padded frames, and past about 16 items width buys nothing:
# the demo set sorted by length ran at RTFx 286 / 338 / 296 / 259 / 198 in batches of 8 / 16 / 32 /
# 64 / 128 (2 cores), against about 200 in batches of 16 in arrival order.
CPU_SUB_BATCH = 16


def length_groups(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Indices of a batch sorted by length, in as few groups of at most `size` as hold them, of sizes as
    even as can be (18 items: two of 9, not 16 and a lone 2): sub-batches with little padding."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups = -(-len(order) // size)
    return [order[len(order) * k // groups : len(order) * (k + 1) // groups] for k in range(groups)]


def sub_batches(items: list[int], lengths: Sequence[int], on_cpu: bool) -> list[list[int]]:
    """How to encode the batch `items` (indices into `lengths`): whole on a GPU, which gains from its
    width; on a CPU, which only pays for its padding, in `length_groups` of `CPU_SUB_BATCH` (the NeMo
    engine then decodes the groups together)."""
    if not items:
        return []
    if not on_cpu:
        return [items]
    return [[items[k] for k in group] for group in length_groups([lengths[i] for i in items], CPU_SUB_BATCH)]


def warmup_clips(sample_rate: int, seconds: float = 2.0) -> list[np.ndarray]:
    """Quiet noise of two lengths: a batch that runs every part of a backend's path once."""
    clip = (np.random.default_rng(0).standard_normal(int(seconds * sample_rate)) * 0.01).astype(np.float32)
    return [clip, clip[: len(clip) // 2]]
