"""The audio a benchmark or load test sends: evaluation files as 16 kHz PCM, and where speech ends."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from parakeet_serve.audio import AudioFormat, decode_audio
from parakeet_serve.evaluation import ManifestEntry

RATE = 16000
_SPEECH_DB = -35.0  # a 10 ms frame within this many dB of the file's loudest frame counts as speech


@dataclass(frozen=True)
class Clip:
    """Files spoken one after another, each followed by silence, as little-endian 16-bit PCM."""

    pcm: bytes
    texts: tuple[str, ...]
    speech_ends_s: tuple[float, ...]  # where each file's speech ends, from the clip's start

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / RATE


def read_audio(entry: ManifestEntry) -> np.ndarray:
    """The entry's audio, mono float32 at 16 kHz."""
    return decode_audio(entry.audio.read_bytes(), AudioFormat(), target_rate=RATE, max_seconds=3600).mono()


def make_clip(entries: list[ManifestEntry], gap_s: float) -> Clip:
    gap = np.zeros(int(gap_s * RATE), np.float32)
    parts, ends, offset = [], [], 0
    for entry in entries:
        audio = read_audio(entry)
        ends.append((offset + speech_end(audio)) / RATE)
        parts += [audio, gap]
        offset += len(audio) + len(gap)
    return Clip(pcm16(np.concatenate(parts)), tuple(e.text for e in entries), tuple(ends))


def joined(entries: list[ManifestEntry], seconds: float, folder: Path, pause_s: float = 0.3) -> list[ManifestEntry]:
    """Consecutive files spoken one after another with a short pause, as clips of at least `seconds`
    (the last may be shorter), written to `folder` as 16 kHz FLAC: long-form audio (as the Open ASR
    leaderboard's 10-30 s utterances) from an evaluation set of short files."""
    pause = np.zeros(int(pause_s * RATE), np.float32)
    clips: list[ManifestEntry] = []
    parts: list[np.ndarray] = []
    texts: list[str] = []
    for n, entry in enumerate(entries):
        parts += [read_audio(entry), pause]
        texts.append(entry.text)
        if sum(map(len, parts)) >= seconds * RATE or n == len(entries) - 1:
            audio = np.concatenate(parts[:-1])
            path = folder / f"joined-{len(clips):05d}.flac"
            sf.write(path, audio, RATE, subtype="PCM_16")
            clips.append(ManifestEntry(path, len(audio) / RATE, " ".join(texts)))
            parts, texts = [], []
    return clips


def pcm16(audio: np.ndarray) -> bytes:
    """Float audio as little-endian 16-bit PCM, as a client sends LINEAR_PCM."""
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def speech_end(audio: np.ndarray) -> int:
    """The sample after the last 10 ms frame loud enough to be speech."""
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    level = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9)
    voiced = np.flatnonzero(level > level.max() + _SPEECH_DB)
    return int((voiced[-1] + 1) * 160) if len(voiced) else len(audio)
