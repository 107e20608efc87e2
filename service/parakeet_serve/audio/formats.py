"""Plain descriptions of audio: what the client declared and what was decoded."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Encoding(StrEnum):
    """Audio encodings of the Riva protocol, independent of its generated types."""

    UNSPECIFIED = "unspecified"
    LINEAR_PCM = "linear_pcm"
    FLAC = "flac"
    MULAW = "mulaw"
    ALAW = "alaw"
    OGGOPUS = "oggopus"


@dataclass(frozen=True)
class AudioFormat:
    """What the client says the bytes are; 0 means "not declared"."""

    encoding: Encoding = Encoding.UNSPECIFIED
    sample_rate: int = 0
    channels: int = 0


@dataclass(frozen=True)
class Audio:
    """Decoded audio: float32 samples in [-1, 1], shape (channels, samples)."""

    samples: np.ndarray
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate

    def mono(self) -> np.ndarray:
        """The channels averaged into one (a plain downmix)."""
        return self.samples.mean(axis=0, dtype=np.float32) if self.channels > 1 else self.samples[0]
