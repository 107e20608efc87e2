"""What the engine returns, as plain data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol


@dataclass(frozen=True)
class Word:
    """One recognised word with its time span (seconds from the start of the audio)."""

    text: str
    start_s: float
    end_s: float
    confidence: float


@dataclass(frozen=True)
class Token:
    """One emitted token: its id, its text (a leading space where it starts a word), its log-probability
    and when it was emitted (seconds from the start of the audio)."""

    token_id: int
    text: str
    logprob: float
    start_s: float


@dataclass(frozen=True)
class TokenSpan:
    """One emitted token: its id, its tokenizer piece, encoder frames [start, end) and confidence."""

    token_id: int
    piece: str
    start_frame: int
    end_frame: int
    confidence: float


@dataclass(frozen=True)
class Hypothesis:
    """One transcript of an utterance."""

    text: str
    confidence: float
    words: tuple[Word, ...] = ()
    tokens: tuple[Token, ...] = ()

    def shifted(self, seconds: float) -> Hypothesis:
        """The same hypothesis for audio that began `seconds` later (a piece of a longer audio)."""
        if not seconds:
            return self
        words = tuple(replace(w, start_s=round(w.start_s + seconds, 3), end_s=round(w.end_s + seconds, 3))
                      for w in self.words)
        tokens = tuple(replace(t, start_s=round(t.start_s + seconds, 3)) for t in self.tokens)
        return replace(self, words=words, tokens=tokens)


def runners_up(best: Hypothesis, scored: list[tuple[str, float]], n: int) -> list[Hypothesis]:
    """Up to `n - 1` hypotheses after the greedy `best`, from a beam search's (text, score) list, best
    first: texts other than `best`'s, each once, confident as its share of the list's probability."""
    top = max((score for _, score in scored), default=0.0)
    norm = sum(math.exp(score - top) for _, score in scored) or 1.0
    seen, extra = {best.text}, []
    for text, score in scored:
        if text not in seen:
            seen.add(text)
            extra.append(Hypothesis(text=text, confidence=math.exp(score - top) / norm))
    return extra[: n - 1]


def joined(pieces: list[Hypothesis]) -> Hypothesis:
    """One hypothesis of consecutive pieces of an audio (their times already on the whole audio)."""
    tokens = [t for p in pieces for t in p.tokens]
    weights = [max(len(p.tokens), 1) for p in pieces]
    confidence = sum(p.confidence * w for p, w in zip(pieces, weights, strict=True)) / (sum(weights) or 1)
    return Hypothesis(" ".join(p.text for p in pieces if p.text), confidence,
                      tuple(w for p in pieces for w in p.words), tuple(tokens))


@dataclass(frozen=True)
class Transcript:
    """The engine's answer for one audio: hypotheses best first (at least one, maybe empty text)."""

    hypotheses: tuple[Hypothesis, ...]

    @property
    def best(self) -> Hypothesis:
        return self.hypotheses[0]

    def transcript(self) -> Transcript:
        """Itself: a transcript already built (as `words.PendingTranscript.transcript()` builds one)."""
        return self


class Recognition(Protocol):
    """What an engine's `recognise` gives for one audio: a `Transcript`, or a `words.PendingTranscript`
    whose words are still to build."""

    def transcript(self) -> Transcript:
        ...


def transcripts(recognitions: Sequence[Recognition]) -> list[Transcript]:
    """Each recognition's transcript, its words built on the calling thread."""
    return [r.transcript() for r in recognitions]


@dataclass(frozen=True)
class ModelInfo:
    """What is being served, for the config RPC, logs and metrics."""

    model_id: str
    architecture: str
    decoder: str
    device: str
    precision: str
    sample_rate: int
    frame_shift_s: float
    supports_alternatives: bool
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def timed_ends(self) -> bool:
        """Whether its decoder gives each token a duration (TDT); others only say in which frame it came."""
        return self.decoder == "tdt"
