"""Words from token-level hypotheses: grouping, times and confidences."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from parakeet_serve.engine.types import Hypothesis, Token, TokenSpan, Transcript, Word

SENTENCEPIECE_WORD_START = "\u2581"


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


# Within running speech a word's audio lasts until the next word begins; a longer gap is a pause.
MAX_WORD_GAP_S = 0.24


def settle_times(words: list[Word], frame_shift_s: float) -> list[Word]:
    """Word times for an alignment without durations (RNN-T, CTC: each token is one frame, when it was
    emitted): a word ends where the next begins unless a pause (over `MAX_WORD_GAP_S`) lies between, and
    words emitted in the same frame share it out in turn instead of all holding the whole of it."""
    out = list(words)
    i = 0
    while i < len(out):
        j = i
        while j + 1 < len(out) and out[j + 1].start_s == out[i].start_s:
            j += 1
        if j > i:  # words i..j begin in one frame: a slice of it each, the last keeping any later end
            first, share = out[i].start_s, frame_shift_s / (j - i + 1)
            for k in range(i, j + 1):
                start = first + (k - i) * share
                end = start + share if k < j else max(out[j].end_s, start + share)
                out[k] = replace(out[k], start_s=round(start, 3), end_s=round(end, 3))
        i = j + 1
    for k in range(len(out) - 1):
        gap = out[k + 1].start_s - out[k].end_s
        if 0 < gap <= MAX_WORD_GAP_S:
            out[k] = replace(out[k], end_s=out[k + 1].start_s)
    return out


class GrowingWords:
    """The words of a token sequence that only grows (a stream's utterance), each finished word
    grouped once: an interim regrouped its whole utterance at every step, about 10 us a token on
    the event loop (issue 19), 0.5 ms a stream a step at 60 tokens. `clear` starts a new sequence.
    Without `timed_ends` (an alignment without durations) the times are settled (`settle_times`)."""

    def __init__(self, detokenize: Callable[[list[int]], str], frame_shift_s: float, timed_ends: bool = True) -> None:
        self._detokenize, self._frame_shift_s, self._timed_ends = detokenize, frame_shift_s, timed_ends
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
        words = self._done + group_words(tokens[self._grouped :], self._detokenize, self._frame_shift_s)
        return words if self._timed_ends else settle_times(words, self._frame_shift_s)


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
                  frame_shift_s: float, timed_ends: bool = True) -> Hypothesis:
    """A decoded hypothesis from its token spans: text, mean token confidence, words and tokens; without
    `timed_ends` (no durations in the alignment) the word times are settled."""
    confidence = sum(s.confidence for s in spans) / len(spans) if spans else 0.0
    words = group_words(spans, detokenize, frame_shift_s)
    return Hypothesis(detokenize([s.token_id for s in spans]), confidence,
                      tuple(words if timed_ends else settle_times(words, frame_shift_s)),
                      token_logprobs(spans, frame_shift_s))


@dataclass(frozen=True)
class PendingTranscript:
    """One audio's greedy tokens with its text and words not yet built. Building them costs about
    10 us of Python per token (issue 19), which a GPU would spend idle if its thread did it: the
    scheduler calls `transcript()` on another thread while the next batch runs."""

    spans: Sequence[TokenSpan]
    detokenize: Callable[[list[int]], str]
    frame_shift_s: float
    timed_ends: bool = True  # the alignment has durations (TDT)

    def transcript(self) -> Transcript:
        return Transcript((hypothesis_of(self.spans, self.detokenize, self.frame_shift_s, self.timed_ends),))
