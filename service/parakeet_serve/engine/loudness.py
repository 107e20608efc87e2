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

import numpy as np

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

    def loud(self, log_mel: np.ndarray) -> np.ndarray:
        """Which of the new (mels, n) log-mel frames are loud: a bool array (n,)."""
        if not log_mel.shape[1]:
            return np.zeros(0, dtype=bool)
        mels = log_mel.astype(np.float64)
        top = mels.max(axis=0)
        energy = top + np.log(np.exp(mels - top).sum(axis=0))  # log of the frame's total power
        # The floor after frame t is min(floor + rise * (t + 1), min over j <= t of e_j + rise * (t - j)):
        # a running minimum once the rise is taken out, so no loop over frames on the inference thread.
        rise = FLOOR_RISE_PER_FRAME * np.arange(len(energy), dtype=np.float64)
        floor = rise + np.minimum(np.minimum.accumulate(energy - rise), self.floor + FLOOR_RISE_PER_FRAME)
        peak = np.maximum(np.maximum.accumulate(energy), self.peak)
        self.floor, self.peak = float(floor[-1]), float(peak[-1])
        return energy > np.maximum(floor + ABOVE_FLOOR, peak - BELOW_PEAK)
