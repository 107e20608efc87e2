"""Which feature frames of a stream are loud enough to be speech, for endpointing.

A decoder that falls silent for a moment in the middle of a word must not end the utterance, and
neither must a quiet stretch of background noise keep one open. A frame counts as speech when its
energy stands above both the stream's noise floor (tracked as a minimum that rises slowly, so it
follows a noise that grows) and the utterance's loudest frame less a fixed range (so faint hiss
after clean speech is silence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_DB = math.log(10) / 10  # one decibel of power, in the natural-log units of log-mel features
ABOVE_FLOOR = 6 * _DB
BELOW_PEAK = 30 * _DB
FLOOR_RISE_PER_FRAME = 0.03 * _DB  # 3 dB per second at 10 ms frames


@dataclass
class Loudness:
    floor: float = math.inf
    peak: float = -math.inf  # of the current utterance

    def start_utterance(self) -> None:
        self.peak = -math.inf

    def loud(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Which of the new (mels, n) log-mel frames are loud: a bool tensor (n,) on the CPU.

        The judgement runs on the CPU wherever the features were made: it is a few hundred numbers
        per chunk, and the state it keeps is plain floats.
        """
        energy = torch.logsumexp(log_mel.detach().to("cpu", torch.float64), dim=0)
        if not len(energy):
            return torch.zeros(0, dtype=torch.bool)
        # The floor after frame t is min(floor + rise * (t + 1), min over j <= t of e_j + rise * (t - j)):
        # a running minimum once the rise is taken out, so no loop over frames on the inference thread.
        rise = FLOOR_RISE_PER_FRAME * torch.arange(len(energy), dtype=torch.float64)
        floor = rise + torch.clamp((energy - rise).cummin(0).values, max=self.floor + FLOOR_RISE_PER_FRAME)
        peak = torch.clamp(energy.cummax(0).values, min=self.peak)
        self.floor, self.peak = float(floor[-1]), float(peak[-1])
        return energy > torch.maximum(floor + ABOVE_FLOOR, peak - BELOW_PEAK)
