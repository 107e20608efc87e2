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
        """Which of the new (mels, n) log-mel frames are loud: a bool tensor (n,)."""
        energies = torch.logsumexp(log_mel.float(), dim=0).tolist()
        out = []
        for energy in energies:
            self.floor = min(energy, self.floor + FLOOR_RISE_PER_FRAME)
            self.peak = max(self.peak, energy)
            out.append(energy > max(self.floor + ABOVE_FLOOR, self.peak - BELOW_PEAK))
        return torch.tensor(out, dtype=torch.bool)
