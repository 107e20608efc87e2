"""What every inference backend offers the server: the one interface behind `PARAKEET_BACKEND`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from parakeet_serve.engine.types import ModelInfo, Recognition, Transcript
from parakeet_serve.errors import ModelLoadError
from parakeet_serve.word_boost import WordBoost


@dataclass(frozen=True)
class WarmupShape:
    """The largest work a server hands its engine: `max_batch` items of usually at most `clip_s` (a request is
    cut into pieces of that length where it can be), and at most `audio_s` in one item."""

    max_batch: int
    clip_s: float
    audio_s: float


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

    def warmup(self, shape: WarmupShape | None = None) -> None:
        """Run the whole path once, so the first request pays no lazy initialisation; on a GPU also at the
        largest `shape` it will serve."""
        ...

    def detokenize(self, ids: list[int]) -> str:
        ...

    def streamer(self, left_context_s: float) -> Any:
        """Its streaming steps (`engine.streaming.Streamer`), or None when it serves `Recognize` only."""
        ...

    def gpu_memory(self) -> tuple[Callable[[], int], Callable[[], int]] | None:
        """Readers of (allocated, reserved) device memory in bytes, when it runs on a GPU it can measure."""
        ...


# On a CPU an encoder call costs about its padded samples (items x the longest) plus a fixed part,
# worth about 6 s of audio for the demo model on 2 cores: cut where lengths spread, keep alike ones
# together. Against groups of a fixed 16, the demo set in batches of 32 ran 13-23% faster (issue 19).
CPU_GROUP_COST_S = 6.0
CPU_MAX_GROUP = 32  # wider buys a CPU nothing, and it bounds the search below


def length_groups(lengths: Sequence[int], group_cost: float, max_group: int = CPU_MAX_GROUP) -> list[list[int]]:
    """Indices sorted by length, cut into the contiguous groups of at most `max_group` that cost least
    to encode, a group costing its padded length plus `group_cost` (in the units of `lengths`)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    ordered = [lengths[i] for i in order]
    cost = [0.0] + [math.inf] * len(order)  # cost[j]: the cheapest cut of the first j items
    start = [0] * (len(order) + 1)  # where the last group of that cut starts
    for end in range(1, len(order) + 1):
        for first in range(max(0, end - max_group), end):
            total = cost[first] + ordered[end - 1] * (end - first) + group_cost
            if total < cost[end]:
                cost[end], start[end] = total, first
    groups, end = [], len(order)
    while end:
        groups.append(order[start[end] : end])
        end = start[end]
    return groups[::-1]


def sub_batches(items: list[int], lengths: Sequence[int], on_cpu: bool, sample_rate: int) -> list[list[int]]:
    """How to encode the batch `items` (indices into `lengths`, in samples): whole on a GPU, which gains
    from its width; on a CPU, which pays for its padding, in `length_groups` (the NeMo engine then
    decodes the groups together)."""
    if not items:
        return []
    if not on_cpu:
        return [items]
    groups = length_groups([lengths[i] for i in items], CPU_GROUP_COST_S * sample_rate)
    return [[items[k] for k in group] for group in groups]


def warmup_clips(sample_rate: int, seconds: float = 2.0) -> list[np.ndarray]:
    """Quiet noise of two lengths: a batch that runs every part of a backend's path once."""
    clip = (np.random.default_rng(0).standard_normal(int(seconds * sample_rate)) * 0.01).astype(np.float32)
    return [clip, clip[: len(clip) // 2]]


def pick_head(asked: str, transducer: str | None, has_ctc: bool, model: str) -> str:
    """The decoder to serve (`ctc`, `rnnt` or `tdt`) of a model with a transducer of kind `transducer` (None:
    none) and/or a CTC head, for the `PARAKEET_DECODER` asked (`auto` prefers the transducer); `ModelLoadError`
    naming `model` when it has no such decoder."""
    if asked == "ctc":
        if not has_ctc:
            raise ModelLoadError(f"decoder=ctc but {model} has no CTC head")
        return "ctc"
    if transducer is None:
        if asked in ("rnnt", "tdt"):
            raise ModelLoadError(f"decoder={asked} but {model} is CTC-only")
        return "ctc"
    if asked == "tdt" and transducer != "tdt":
        raise ModelLoadError(f"decoder=tdt but {model}'s transducer is RNN-T")
    return transducer
