"""What the engine returns, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    """One recognised word with its time span (seconds from the start of the audio)."""

    text: str
    start_s: float
    end_s: float
    confidence: float


@dataclass(frozen=True)
class Token:
    """One emitted token: its text (a leading space where it starts a word) and its log-probability."""

    text: str
    logprob: float


@dataclass(frozen=True)
class Hypothesis:
    """One transcript of an utterance."""

    text: str
    confidence: float
    words: tuple[Word, ...] = ()
    tokens: tuple[Token, ...] = ()


@dataclass(frozen=True)
class Transcript:
    """The engine's answer for one audio: hypotheses best first (at least one, maybe empty text)."""

    hypotheses: tuple[Hypothesis, ...]

    @property
    def best(self) -> Hypothesis:
        return self.hypotheses[0]


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
