"""OpenAI's transcription response formats from a hypothesis: json, text, verbose_json, srt, vtt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parakeet_serve.engine.types import Hypothesis, Word

FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
PAUSE_S = 0.6  # a silence this long between words ends a segment (and a subtitle cue)
MAX_SEGMENT_S, MAX_SEGMENT_WORDS = 8.0, 16


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    words: tuple[Word, ...]

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


def segments(hypothesis: Hypothesis) -> list[Segment]:
    """The words cut into segments at pauses and at a maximum length, never inside a word."""
    out: list[list[Word]] = []
    for word in hypothesis.words:
        current = out[-1] if out else None
        if (current is None or word.start_s - current[-1].end_s >= PAUSE_S
                or word.end_s - current[0].start_s > MAX_SEGMENT_S or len(current) >= MAX_SEGMENT_WORDS):
            out.append([word])
        else:
            current.append(word)
    return [Segment(words[0].start_s, words[-1].end_s, tuple(words)) for words in out]


def verbose_json(hypothesis: Hypothesis, duration_s: float, language: str, words: bool,
                 with_segments: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"task": "transcribe", "language": language, "duration": round(duration_s, 3),
                            "text": hypothesis.text}
    if with_segments:
        body["segments"] = [
            {"id": i, "seek": 0, "start": round(s.start_s, 3), "end": round(s.end_s, 3), "text": s.text,
             "tokens": [], "temperature": 0.0, "avg_logprob": None, "compression_ratio": None,
             "no_speech_prob": None}
            for i, s in enumerate(segments(hypothesis))
        ]
    if words:
        body["words"] = [{"word": w.text, "start": round(w.start_s, 3), "end": round(w.end_s, 3)}
                         for w in hypothesis.words]
    body["usage"] = {"type": "duration", "seconds": max(1, round(duration_s))}
    return body


def logprobs(hypothesis: Hypothesis) -> list[dict[str, Any]]:
    """OpenAI's `logprobs`: each emitted token with its log-probability under the decoder."""
    return [{"token": t.text, "logprob": round(t.logprob, 6), "bytes": list(t.text.encode())}
            for t in hypothesis.tokens]


def subtitles(hypothesis: Hypothesis, kind: str) -> str:
    """SubRip (`srt`) or WebVTT (`vtt`) cues, one per segment."""
    separator = "," if kind == "srt" else "."
    cues = []
    for i, segment in enumerate(segments(hypothesis), 1):
        times = f"{_clock(segment.start_s, separator)} --> {_clock(segment.end_s, separator)}"
        cues.append(f"{i}\n{times}\n{segment.text}\n" if kind == "srt" else f"{times}\n{segment.text}\n")
    return ("" if kind == "srt" else "WEBVTT\n\n") + "\n".join(cues)


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"
