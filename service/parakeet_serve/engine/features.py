"""NeMo's log-mel features in NumPy, for the backends that run without PyTorch.

The same maths as NeMo's `FilterbankFeatures` at inference (no dither): pre-emphasis, a centred,
zero-padded STFT with a symmetric Hann window, the power spectrum through a Slaney mel filterbank,
`log(x + 2**-24)`, optional per-feature normalisation over the valid frames, zeros past them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LOG_GUARD = 2.0**-24
MIN_SAMPLES_S = 0.25  # shorter audio is padded with silence so the encoder has frames (as the NeMo engine)


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000
    n_mels: int = 80
    n_fft: int = 512
    window_size_s: float = 0.025
    window_stride_s: float = 0.01
    preemphasis: float = 0.97
    normalize: str = "per_feature"  # Parakeet's; "NA" (the demo model) leaves the log-mels as they are

    @property
    def hop(self) -> int:
        return round(self.window_stride_s * self.sample_rate)

    def frames(self, seconds: float) -> int:
        """Feature frames of `seconds` of audio."""
        return round(seconds * self.sample_rate) // self.hop + 1


class LogMel:
    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        width = round(config.window_size_s * config.sample_rate)
        margin = (config.n_fft - width) // 2
        self._window = np.pad(np.hanning(width).astype(np.float32), (margin, config.n_fft - width - margin))
        self._filters = slaney_mel_filters(config.sample_rate, config.n_fft, config.n_mels)

    def __call__(self, audios: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(features [batch, mels, frames] float32, valid frames [batch] int64) of mono audio."""
        c = self.config
        signal, lengths = pad_batch(audios, round(MIN_SAMPLES_S * c.sample_rate))
        logmel = self._log_mel(signal, lengths)
        valid_frames = lengths // c.hop
        valid = np.arange(logmel.shape[1])[None, :, None] < valid_frames[:, None, None]
        if c.normalize == "per_feature":
            count = valid_frames[:, None, None].astype(np.float32)
            mean = np.where(valid, logmel, 0.0).sum(axis=1, keepdims=True) / count
            spread = np.where(valid, np.square(logmel - mean), 0.0).sum(axis=1, keepdims=True)
            logmel = (logmel - mean) / (np.sqrt(spread / np.maximum(count - 1, 1)) + 1e-5)
        features = np.where(valid, logmel, 0.0).astype(np.float32)
        return np.ascontiguousarray(features.transpose(0, 2, 1)), valid_frames

    def frames(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each mono audio's valid frames (mels, n), as NeMo counts them (one per hop), unnormalised,
        computed in one batch (for streaming)."""
        signal, lengths = pad_batch(audios)
        logmel = self._log_mel(signal, lengths)
        return [np.ascontiguousarray(logmel[i, : n // self.config.hop].T) for i, n in enumerate(lengths)]

    def _log_mel(self, signal: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Log-mels [batch, frames, mels] of a padded batch; pre-emphasis stops at each item's end."""
        c = self.config
        emphasised = signal.copy()
        emphasised[:, 1:] -= c.preemphasis * signal[:, :-1]
        emphasised[np.arange(signal.shape[1])[None, :] >= lengths[:, None]] = 0.0
        padded = np.pad(emphasised, ((0, 0), (c.n_fft // 2, c.n_fft // 2)))
        frames = np.lib.stride_tricks.sliding_window_view(padded, c.n_fft, axis=1)[:, :: c.hop] * self._window
        power = np.square(np.abs(np.fft.rfft(frames, c.n_fft))).astype(np.float32)
        return np.log(power @ self._filters + LOG_GUARD)


def pad_batch(audios: Sequence[np.ndarray], min_samples: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mono audios as one zero-padded float32 batch, and each one's length (at least `min_samples`:
    shorter audio counts its padding as silence)."""
    lengths = np.array([max(len(a), min_samples) for a in audios], np.int64)
    signal = np.zeros((len(audios), int(lengths.max())), np.float32)
    for i, audio in enumerate(audios):
        signal[i, : len(audio)] = audio
    return signal, lengths


def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters on Slaney's mel scale (linear to 1 kHz, logarithmic above), each normalised
    to unit area, as librosa builds them for NeMo: [n_fft // 2 + 1, n_mels]."""
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return filters.T.astype(np.float32)


_F_SP, _MIN_LOG_HZ = 200.0 / 3, 1000.0
_MIN_LOG_MEL, _LOG_STEP = _MIN_LOG_HZ / _F_SP, np.log(6.4) / 27.0


def _hz_to_mel(hz: float | np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    linear = hz / _F_SP
    return np.where(hz >= _MIN_LOG_HZ, _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-10) / _MIN_LOG_HZ) / _LOG_STEP, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel - _MIN_LOG_MEL)), _F_SP * mel)
