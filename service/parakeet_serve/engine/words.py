"""Words from token-level hypotheses: grouping, times and confidences."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from parakeet_serve.engine.types import Hypothesis, Token, Transcript, Word

SENTENCEPIECE_WORD_START = "\u2581"


@dataclass(frozen=True)
class TokenSpan:
    """One emitted token: its id, its tokenizer piece, encoder frames [start, end) and confidence."""

    token_id: int
    piece: str
    start_frame: int
    end_frame: int
    confidence: float


def group_words(
    tokens: Sequence[TokenSpan], detokenize: Callable[[list[int]], str], frame_shift_s: float
) -> list[Word]:
    """Join tokens into words: a SentencePiece piece starting with '▁', or a token after a space
    (character vocabularies), begins a new word. A word's confidence is its least confident token,
    so one doubtful piece marks the whole word as doubtful."""
    groups: list[list[TokenSpan]] = []
    for token in tokens:
        if token.piece.strip() == "":
            groups.append([])  # a space token only separates words
            continue
        if not groups or not groups[-1] or token.piece.startswith(SENTENCEPIECE_WORD_START):
            groups.append([])
        groups[-1].append(token)
    words = []
    for group in filter(None, groups):
        text = detokenize([t.token_id for t in group]).strip()
        if not text:
            continue
        start = group[0].start_frame * frame_shift_s
        end = max(group[-1].end_frame, group[0].start_frame + 1) * frame_shift_s
        words.append(Word(text, round(start, 3), round(end, 3), min(t.confidence for t in group)))
    return words


class GrowingWords:
    """The words of a token sequence that only grows (a stream's utterance), each finished word
    grouped once: an interim regrouped its whole utterance at every step, about 10 us a token on
    the event loop (issue 19), 0.5 ms a stream a step at 60 tokens. `clear` starts a new sequence."""

    def __init__(self, detokenize: Callable[[list[int]], str], frame_shift_s: float) -> None:
        self._detokenize, self._frame_shift_s = detokenize, frame_shift_s
        self.clear()

    def clear(self) -> None:
        self._done: list[Word] = []
        self._grouped = 0  # the tokens before this index are in `_done`; a word starts at it

    def of(self, tokens: Sequence[TokenSpan]) -> list[Word]:
        """`tokens`' words, as `group_words` gives them; `tokens` extends the sequence of the last call."""
        for i in range(len(tokens) - 1, self._grouped, -1):  # the last word start: the words before it are finished
            if _starts_word(tokens[i]):
                self._done += group_words(tokens[self._grouped : i], self._detokenize, self._frame_shift_s)
                self._grouped = i
                break
        return self._done + group_words(tokens[self._grouped :], self._detokenize, self._frame_shift_s)


def _starts_word(token: TokenSpan) -> bool:
    """Whether `group_words` begins a new group at this token whatever came before (a space token
    only separates, so grouping may also start afresh there)."""
    return token.piece.startswith(SENTENCEPIECE_WORD_START) or token.piece.strip() == ""


def token_logprobs(tokens: Sequence[TokenSpan], frame_shift_s: float) -> tuple[Token, ...]:
    """Each token with its log-probability and emission time. The confidence is the emitted token's
    probability (NeMo's max_prob measure), so its log is the token's logprob."""
    return tuple(Token(t.token_id, t.piece.replace(SENTENCEPIECE_WORD_START, " "), math.log(max(t.confidence, 1e-12)),
                       round(t.start_frame * frame_shift_s, 3)) for t in tokens)


def hypothesis_of(spans: Sequence[TokenSpan], detokenize: Callable[[list[int]], str],
                  frame_shift_s: float) -> Hypothesis:
    """A decoded hypothesis from its token spans: text, mean token confidence, words and tokens."""
    confidence = sum(s.confidence for s in spans) / len(spans) if spans else 0.0
    return Hypothesis(detokenize([s.token_id for s in spans]), confidence,
                      tuple(group_words(spans, detokenize, frame_shift_s)), token_logprobs(spans, frame_shift_s))


@dataclass(frozen=True)
class PendingTranscript:
    """One audio's greedy tokens with its text and words not yet built. Building them costs about
    10 us of Python per token (issue 19), which a GPU would spend idle if its thread did it: the
    scheduler calls `transcript()` on another thread while the next batch runs."""

    spans: Sequence[TokenSpan]
    detokenize: Callable[[list[int]], str]
    frame_shift_s: float

    def transcript(self) -> Transcript:
        return Transcript((hypothesis_of(self.spans, self.detokenize, self.frame_shift_s),))
