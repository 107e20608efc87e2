"""OpenAI's transcription response formats from a hypothesis: json, text, verbose_json, srt, vtt."""

from __future__ import annotations

import bisect
import zlib
from dataclasses import dataclass
from typing import Any

from parakeet_serve.engine.types import Hypothesis, Token, Word

FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
PAUSE_S = 0.6  # a silence this long between words ends a segment (and a subtitle cue)
MAX_SEGMENT_S, MAX_SEGMENT_WORDS = 8.0, 16


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    words: tuple[Word, ...]
    tokens: tuple[Token, ...]

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


def segments(hypothesis: Hypothesis) -> list[Segment]:
    """The words cut into segments at pauses and at a maximum length, never inside a word; each segment
    holds the tokens emitted from its start until the next segment's."""
    cut: list[list[Word]] = []
    for word in hypothesis.words:
        current = cut[-1] if cut else None
        if (current is None or word.start_s - current[-1].end_s >= PAUSE_S
                or word.end_s - current[0].start_s > MAX_SEGMENT_S or len(current) >= MAX_SEGMENT_WORDS):
            cut.append([word])
        else:
            current.append(word)
    starts = [words[0].start_s for words in cut]
    tokens: list[list[Token]] = [[] for _ in cut]
    for token in hypothesis.tokens if cut else ():
        tokens[max(0, bisect.bisect_right(starts, token.start_s) - 1)].append(token)
    return [Segment(words[0].start_s, words[-1].end_s, tuple(words), tuple(t))
            for words, t in zip(cut, tokens, strict=True)]


def verbose_json(hypothesis: Hypothesis, duration_s: float, language: str, words: bool,
                 with_segments: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"task": "transcribe", "language": language, "duration": round(duration_s, 3),
                            "text": hypothesis.text}
    if with_segments:
        body["segments"] = [_segment(i, s) for i, s in enumerate(segments(hypothesis))]
    if words:
        body["words"] = [{"word": w.text, "start": round(w.start_s, 3), "end": round(w.end_s, 3)}
                         for w in hypothesis.words]
    body["usage"] = {"type": "duration", "seconds": max(1, round(duration_s))}
    return body


def _segment(index: int, segment: Segment) -> dict[str, Any]:
    """Whisper's segment fields from what a transducer knows: `seek` in centiseconds as Whisper counts it,
    `avg_logprob` over the segment's tokens, `no_speech_prob` as one minus its most confident word's
    confidence (a transducer has no no-speech token), `temperature` 0 (greedy decoding)."""
    logprobs = [t.logprob for t in segment.tokens]
    encoded = segment.text.encode()
    return {
        "id": index, "seek": round(segment.start_s * 100), "start": round(segment.start_s, 3),
        "end": round(segment.end_s, 3), "text": segment.text, "tokens": [t.token_id for t in segment.tokens],
        "temperature": 0.0,
        "avg_logprob": round(sum(logprobs) / len(logprobs), 6) if logprobs else 0.0,
        "compression_ratio": round(len(encoded) / len(zlib.compress(encoded)), 4) if encoded else 0.0,
        "no_speech_prob": round(1.0 - max(w.confidence for w in segment.words), 6),
    }


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
