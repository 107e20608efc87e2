"""The ONNX backend's greedy decoders in NumPy: CTC, and batched transducer label looping over the export's
decoder-joint graph (RNN-T or TDT), each able to continue from where a stream's previous chunk left it and to
favour boosted phrases."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from parakeet_serve.engine.onnx.boosting import PhraseTree
from parakeet_serve.engine.types import TokenSpan

_CONFIDENCE_ALPHA = 0.33  # NeMo's max_prob confidence, as the NeMo engine is configured


@dataclass
class DecoderState:
    """Where one item's greedy transducer decoding stands between calls (a stream's chunks)."""

    last: int  # the last label emitted (the blank before any)
    h: np.ndarray  # the prediction network's state: (layers, hidden) each
    c: np.ndarray
    skip: int = 0  # frames a TDT duration jumped past the end of the frames decoded so far
    node: int = 0  # where its phrase boosting stands (`PhraseTree` node)


class GreedyDecoder:
    """Greedy decoding of one model's vocabulary (`pieces`, the blank after them); `joint` is the export's
    decoder-joint session (None for a CTC model), `durations` a TDT's (empty for RNN-T)."""

    def __init__(self, pieces: list[str], blank_id: int, joint: Any, durations: list[int], max_symbols: int) -> None:
        self.pieces, self.blank_id = pieces, blank_id
        self.durations, self.max_symbols = durations, max_symbols
        self._session = joint
        if joint is not None:
            state = {i.name: i.shape for i in joint.get_inputs()}["input_states_1"]
            self._state_shape = (int(state[0]), int(state[2]))

    def fresh(self) -> tuple[np.ndarray, np.ndarray]:
        """The prediction network's state before any label."""
        zeros = np.zeros(self._state_shape, np.float32)
        return zeros, zeros.copy()

    def joint(self, frames: np.ndarray, last: np.ndarray, h: np.ndarray,
              c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The joint's scores (n, tokens + blank + a TDT's durations) after `last` on each encoder frame
        (n, dim), and the prediction network's state after `last`."""
        logits, _, h_next, c_next = self._session.run(None, {
            "encoder_outputs": frames[:, :, None], "targets": last[:, None],
            "target_length": np.ones(len(last), np.int32), "input_states_1": h, "input_states_2": c})
        return logits.reshape(len(last), -1), h_next, c_next

    def joint_step(self, frames: np.ndarray, last: np.ndarray, h: np.ndarray,
                   c: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """Log-probabilities of the tokens (and a TDT's durations) after `last` on each encoder frame (a beam
        search's step)."""
        logits, h_next, c_next = self.joint(frames, last, h, c)
        vocabulary = len(self.pieces) + 1
        durations = _log_softmax(logits[:, vocabulary:]) if self.durations else None
        return _log_softmax(logits[:, :vocabulary]), durations, h_next, c_next

    def ctc(self, log_probs: np.ndarray, lengths: np.ndarray, previous: Sequence[int] | None = None,
            offsets: Sequence[int] | None = None) -> tuple[list[list[TokenSpan]], list[int]]:
        """Greedy CTC: each item's tokens (frames from `offsets[i]`) and its last label; `previous[i]`,
        the label before its first frame, collapses a repeat across a stream's chunks."""
        labels, best = log_probs.argmax(axis=-1), log_probs.max(axis=-1)
        out, lasts = [], []
        for row in range(len(labels)):
            spans, before = [], -1 if previous is None else previous[row]
            offset = 0 if offsets is None else offsets[row]
            for t in range(int(lengths[row])):
                label = int(labels[row, t])
                if label != self.blank_id and label != before:
                    spans.append(self._span(label, offset + t, offset + t + 1, math.exp(float(best[row, t]))))
                before = label
            out.append(spans)
            lasts.append(before)
        return out, lasts

    def transducer(self, encoded: np.ndarray, lengths: np.ndarray,
                          states: Sequence[DecoderState | None] | None = None, offsets: Sequence[int] | None = None,
                          trees: Sequence[PhraseTree | None] | None = None,
                          ) -> tuple[list[list[TokenSpan]], list[DecoderState]]:
        """Greedy label looping for the whole batch: each call advances every unfinished item by one
        token or blank; the decoder's state changes only where a token was emitted. Items continue
        from `states` (a stream's previous chunks; None: afresh) with frames from `offsets`; an item
        with a phrase tree picks its tokens with the tree's gains (whether it emits one, without)."""
        batch, vocabulary = len(encoded), len(self.pieces)
        starts = [s or DecoderState(self.blank_id, *self.fresh()) for s in (states or [None] * batch)]
        t, symbols = np.array([s.skip for s in starts], np.int64), np.zeros(batch, np.int64)
        last = np.array([s.last for s in starts], np.int32)  # the blank is the start symbol
        h, c = np.stack([s.h for s in starts], axis=1), np.stack([s.c for s in starts], axis=1)
        shift = np.zeros(batch, np.int64) if offsets is None else np.asarray(offsets, np.int64)
        nodes, boosted = [s.node for s in starts], [i for i, tree in enumerate(trees or []) if tree is not None]
        out: list[list[TokenSpan]] = [[] for _ in range(batch)]
        while (active := np.flatnonzero(t < lengths)).size:
            logits, h_next, c_next = self.joint(encoded[active, :, t[active]], last[active], h[:, active],
                                                 c[:, active])
            token_logits = logits[:, : vocabulary + 1]  # the pieces and the blank; a TDT's durations follow
            tokens = token_logits.argmax(axis=-1)
            steps = (np.array(self.durations)[logits[:, vocabulary + 1 :].argmax(axis=-1)] if self.durations
                     else np.ones(active.size, np.int64))
            emitted = tokens != self.blank_id
            if boosted:
                self._boost(tokens, token_logits, active, emitted, trees, nodes)  # type: ignore[arg-type]
            probability = 1.0 / np.exp(token_logits - token_logits.max(axis=-1, keepdims=True)).sum(axis=-1)
            for j in np.flatnonzero(emitted):
                item = active[j]
                start = int(t[item] + shift[item])
                out[item].append(self._span(int(tokens[j]), start, start + int(max(steps[j], 1)),
                                            float(probability[j])))
            changed = active[emitted]
            last[changed] = tokens[emitted]
            h[:, changed], c[:, changed] = h_next[:, emitted], c_next[:, emitted]
            symbols[changed] += 1
            # RNN-T stays on a frame after a token, TDT moves by the predicted duration; a blank, or the
            # most tokens one frame may emit, moves at least one frame on.
            full = symbols[active] >= self.max_symbols
            if self.durations:
                move = np.where(emitted & ~full, steps, np.maximum(steps, 1))
            else:
                move = np.where(emitted & ~full, 0, 1)
            t[active] += move
            symbols[active[move > 0]] = 0
        ends = [DecoderState(int(last[i]), h[:, i].copy(), c[:, i].copy(), int(t[i] - lengths[i]), nodes[i])
                for i in range(batch)]
        return out, ends

    @staticmethod
    def _boost(tokens: np.ndarray, logits: np.ndarray, active: np.ndarray, emitted: np.ndarray,
               trees: Sequence[PhraseTree | None], nodes: list[int]) -> None:
        """Re-pick the emitted tokens of boosted items with their trees' gains, and move their nodes on."""
        for j in np.flatnonzero(emitted):
            item = int(active[j])
            tree = trees[item]
            if tree is not None:
                tokens[j] = int(np.argmax(logits[j, :-1] + tree.bias(nodes[item])))
                nodes[item] = tree.next(nodes[item], int(tokens[j]))

    def _span(self, token_id: int, start: int, end: int, probability: float) -> TokenSpan:
        return TokenSpan(token_id, self.pieces[token_id], start, end, self._confidence(probability))

    def _confidence(self, probability: float) -> float:
        """NeMo's `max_prob` confidence with Tsallis entropy's alpha: 0 for a uniform guess, 1 for certainty."""
        scale = (len(self.pieces) + 1) ** _CONFIDENCE_ALPHA
        return (probability**_CONFIDENCE_ALPHA * scale - 1) / (scale - 1)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
