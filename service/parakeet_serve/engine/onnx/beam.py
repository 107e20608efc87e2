"""Transducer beam search in NumPy, for alternatives on backends without NeMo's (the ONNX one).

Hypotheses wait at the encoder frame they have reached. Frames are visited in order; at each, the
hypotheses there are expanded in one batched decoder+joint call: a blank moves a hypothesis on (one
frame for RNN-T, its predicted duration of at least one for TDT), a token extends it and moves it by
its duration (none for RNN-T, where a frame may emit up to `max_symbols` tokens). Hypotheses that
arrive at the same frame with the same tokens are one, their probabilities added; each frame keeps
the `beam` best. Finished hypotheses are ranked by log-probability per token (NeMo's score_norm).
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


def beam_search(step: JointStep, encoded: np.ndarray, blank: int, state: tuple[np.ndarray, np.ndarray],
                beam: int, durations: Sequence[int] = (), max_symbols: int = 10) -> list[tuple[list[int], float]]:
    """The best hypotheses of one utterance's encoder output (dim, frames): (tokens, log-prob per token)."""
    frames = encoded.shape[1]
    waiting: dict[int, dict[tuple[int, ...], _Hypothesis]] = {0: {(): _Hypothesis((), 0.0, blank, *state)}}
    finished: dict[tuple[int, ...], _Hypothesis] = {}
    for t in range(frames):
        here = _best(waiting.pop(t, {}), beam)
        while here:  # tokens that stay on this frame come back to it
            again: dict[tuple[int, ...], _Hypothesis] = {}
            for hyp, land in _expand(step, encoded[:, t], here, blank, beam, durations, max_symbols):
                target = finished if t + land >= frames else again if land == 0 else waiting.setdefault(t + land, {})
                _merge(target, hyp)
            here = _best(again, beam)
    ranked = sorted(finished.values(), key=lambda h: h.logp / max(len(h.tokens), 1), reverse=True)
    return [(list(h.tokens), h.logp / max(len(h.tokens), 1)) for h in ranked[:beam]]


def _expand(step: JointStep, frame: np.ndarray, hyps: list[_Hypothesis], blank: int, beam: int,
            durations: Sequence[int], max_symbols: int) -> list[tuple[_Hypothesis, int]]:
    """Each hypothesis's `beam` best continuations from this frame, with the frames each moves on."""
    token_logp, duration_logp, h_next, c_next = step(
        np.repeat(frame[None], len(hyps), axis=0), np.array([h.last for h in hyps], np.int32),
        np.stack([h.h for h in hyps], axis=1), np.stack([h.c for h in hyps], axis=1))
    moves = list(durations) or [0]
    out = []
    for i, hyp in enumerate(hyps):
        # the blank always, so that a hypothesis whose frame is full of tokens can still move on
        for label in {blank, *(int(k) for k in np.argsort(-token_logp[i])[:beam])}:
            for k, move in enumerate(moves):
                logp = hyp.logp + float(token_logp[i, label]) + (float(duration_logp[i, k]) if durations else 0.0)
                if label == blank:
                    out.append((_Hypothesis(hyp.tokens, logp, hyp.last, hyp.h, hyp.c), max(move, 1)))
                elif move or hyp.symbols + 1 < max_symbols:  # a full frame lets tokens through only moving on
                    symbols = 0 if move else hyp.symbols + 1
                    out.append((_Hypothesis((*hyp.tokens, label), logp, label, h_next[:, i], c_next[:, i], symbols),
                                move))
    return out


def _merge(target: dict[tuple[int, ...], _Hypothesis], hyp: _Hypothesis) -> None:
    same = target.get(hyp.tokens)
    if same is None:
        target[hyp.tokens] = hyp
    else:  # two paths to the same tokens at the same frame: one hypothesis, both probabilities
        same.logp = float(np.logaddexp(same.logp, hyp.logp))
        same.symbols = min(same.symbols, hyp.symbols)


def _best(hyps: dict[tuple[int, ...], _Hypothesis], beam: int) -> list[_Hypothesis]:
    return sorted(hyps.values(), key=lambda h: h.logp, reverse=True)[:beam]
