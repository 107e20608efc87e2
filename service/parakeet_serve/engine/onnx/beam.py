"""Transducer beam search in NumPy, for alternatives on backends without NeMo's (the ONNX one).

NeMo's modified ALSD (malsd_batch): one beam of `beam` hypotheses, each at its own encoder frame. Each
step expands every unfinished hypothesis by one emission: its `beam` best (label, duration) pairs,
scored jointly (token log-prob + duration log-prob); a blank moves on by its duration, at least one
frame (RNN-T: one), a token by its duration (RNN-T: none). A hypothesis with `max_symbols` tokens on its
frame may only take a blank. Finished hypotheses stay in the beam as they are. Candidates with the same
tokens at the same frame (any frame past the end counting as one) are one, with both probabilities,
then the `beam` best are kept: unlike NeMo's, which merges after pruning and can end with one text
several times, the beam holds distinct hypotheses. Finished hypotheses are ranked by log-prob /
(tokens + 1), NeMo's score_norm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# (encoder frames (n, dim), last labels (n,), h, c (layers, n, hidden)) ->
# (token log-probs (n, vocabulary + 1), duration log-probs (n, durations) or None, next h, next c)
JointStep = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                     tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]]


@dataclass
class _Hypothesis:
    tokens: tuple[int, ...]
    logp: float
    last: int
    h: np.ndarray  # (layers, hidden): the prediction network after `tokens`
    c: np.ndarray
    symbols: int = 0  # tokens emitted at the frame it waits at
    frame: int = 0  # the encoder frame it waits at (>= frames: finished)


def beam_search(step: JointStep, encoded: np.ndarray, blank: int, state: tuple[np.ndarray, np.ndarray],
                beam: int, durations: Sequence[int] = (), max_symbols: int = 10) -> list[tuple[list[int], float]]:
    """The best hypotheses of one utterance's encoder output (dim, frames): (tokens, log-prob / (tokens + 1))."""
    frames = encoded.shape[1]
    moves = list(durations) or [0]
    hyps = [_Hypothesis((), 0.0, blank, *state)]
    while any(h.frame < frames for h in hyps):
        active = [h for h in hyps if h.frame < frames]
        candidates = [h for h in hyps if h.frame >= frames]  # finished: kept as they are
        token_logp, duration_logp, h_next, c_next = step(
            np.ascontiguousarray(encoded[:, [h.frame for h in active]].T), np.array([h.last for h in active], np.int32),
            np.stack([h.h for h in active], axis=1), np.stack([h.c for h in active], axis=1))
        for i, hyp in enumerate(active):
            joint = token_logp[i][:, None] + (duration_logp[i][None, :] if durations else 0.0)  # (labels, moves)
            if hyp.symbols >= max_symbols:  # a full frame: only a blank, scored with its best duration
                move = moves[int(joint.argmax()) % len(moves)]
                logp = hyp.logp + float(token_logp[i, blank]) + (float(duration_logp[i].max()) if durations else 0.0)
                candidates.append(_Hypothesis(hyp.tokens, logp, hyp.last, hyp.h, hyp.c, 0, hyp.frame + max(move, 1)))
                continue
            flat = joint.ravel()
            for index in np.argsort(-flat, kind="stable")[:beam]:
                label, move = divmod(int(index), len(moves))
                move, logp = moves[move], hyp.logp + float(flat[index])
                if label == blank:  # a blank's duration 0 moves it one frame, with its own score (NeMo's)
                    candidates.append(_Hypothesis(hyp.tokens, logp, hyp.last, hyp.h, hyp.c, 0,
                                                  hyp.frame + max(move, 1)))
                else:
                    candidates.append(_Hypothesis((*hyp.tokens, label), logp, label, h_next[:, i], c_next[:, i],
                                                  0 if move else hyp.symbols + 1, hyp.frame + move))
        hyps = sorted(_recombined(candidates, frames), key=lambda h: h.logp, reverse=True)[:beam]
    ranked = sorted(hyps, key=lambda h: h.logp / (len(h.tokens) + 1), reverse=True)
    return [(list(h.tokens), h.logp / (len(h.tokens) + 1)) for h in ranked]


def _recombined(hyps: list[_Hypothesis], frames: int) -> list[_Hypothesis]:
    """The same tokens at the same frame (any past the end: finished) are one hypothesis, both
    probabilities: the beam then holds distinct hypotheses, and alternatives distinct texts."""
    kept: dict[tuple[tuple[int, ...], int], _Hypothesis] = {}
    for hyp in hyps:
        key = (hyp.tokens, min(hyp.frame, frames))
        same = kept.get(key)
        if same is None:
            kept[key] = hyp
        else:
            same.logp = float(np.logaddexp(same.logp, hyp.logp))
    return list(kept.values())
