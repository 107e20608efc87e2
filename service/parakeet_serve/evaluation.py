"""Word and character error rates of a model over a NeMo-style manifest.

A manifest is JSON lines with `audio_filepath` (relative paths are relative to the manifest),
`duration` and `text`. Reference and hypothesis go through the same normalisation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import kaldialign
import numpy as np

from parakeet_serve.audio import AudioFormat, decode_audio
from parakeet_serve.text import strip_punctuation_and_case


@dataclass(frozen=True)
class ManifestEntry:
    audio: Path
    duration_s: float
    text: str


@dataclass(frozen=True)
class Report:
    utterances: int
    words: int
    word_errors: int
    chars: int
    char_errors: int
    audio_s: float
    compute_s: float

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.words, 1)

    @property
    def cer(self) -> float:
        return self.char_errors / max(self.chars, 1)

    @property
    def rtfx(self) -> float:
        """Audio seconds recognised per second of compute."""
        return self.audio_s / self.compute_s if self.compute_s else 0.0

    def summary(self) -> str:
        return (f"WER {self.wer:.2%}  CER {self.cer:.2%}  ({self.utterances} utterances, {self.words} words, "
                f"{self.audio_s:.0f} s of audio, RTFx {self.rtfx:.1f})")


def demo_manifest() -> Path:
    """The demo model's held-out evaluation set, as shipped in the package."""
    return Path(str(resources.files("parakeet_serve").joinpath("eval", "demo-eval.jsonl")))


def read_manifest(path: Path) -> list[ManifestEntry]:
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            audio = Path(item["audio_filepath"])
            entries.append(ManifestEntry(audio if audio.is_absolute() else path.parent / audio,
                                         float(item.get("duration", 0.0)), str(item["text"])))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a manifest line with audio_filepath and text ({exc})") from None
    return entries


def normalise(text: str) -> str:
    return strip_punctuation_and_case(text)


def split_by_phrases(entries: Sequence[ManifestEntry], phrases: Iterable[str]
                     ) -> tuple[list[ManifestEntry], list[ManifestEntry]]:
    """(the entries whose reference says one of `phrases`, the others), whole words only."""
    wanted = [f" {normalise(p)} " for p in phrases]
    said = [e for e in entries if any(p in f" {normalise(e.text)} " for p in wanted)]
    return said, [e for e in entries if e not in said]


def error_counts(reference: str, hypothesis: str) -> tuple[int, int, int, int]:
    """(word errors, reference words, char errors, reference chars) after normalisation."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    words = kaldialign.edit_distance(ref.split(), hyp.split())["total"]
    chars = kaldialign.edit_distance(list(ref), list(hyp))["total"]
    return words, len(ref.split()), chars, len(ref)


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Word errors over reference words, summed across the corpus."""
    counts = [error_counts(r, h) for r, h in zip(references, hypotheses, strict=True)]
    return sum(c[0] for c in counts) / max(sum(c[1] for c in counts), 1)


def evaluate(
    transcribe: Callable[[Sequence[np.ndarray]], list[str]],
    entries: Sequence[ManifestEntry],
    sample_rate: int,
    batch_size: int = 16,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    lead_silence_s: float = 0.0,
) -> Report:
    """Recognise every entry in batches with `transcribe` and count the errors.

    `lead_silence_s` puts that much silence before each clip: how a model copes with speech that starts
    after a pause, as every utterance after a stream's first does.
    """
    lead = np.zeros(round(lead_silence_s * sample_rate), np.float32)
    totals = np.zeros(4, dtype=np.int64)
    audio_s = compute_s = 0.0
    for start in progress(range(0, len(entries), batch_size)):
        chunk = entries[start : start + batch_size]
        audios = [np.concatenate([lead, decode_audio(e.audio.read_bytes(), AudioFormat(), target_rate=sample_rate,
                                                     max_seconds=3600).mono()]) for e in chunk]
        began = time.perf_counter()
        hypotheses = transcribe(audios)
        compute_s += time.perf_counter() - began
        audio_s += sum(len(a) for a in audios) / sample_rate
        for entry, hypothesis in zip(chunk, hypotheses, strict=True):
            totals += error_counts(entry.text, hypothesis)
    word_errors, words, char_errors, chars = (int(x) for x in totals)
    return Report(len(entries), words, word_errors, chars, char_errors, audio_s, compute_s)
