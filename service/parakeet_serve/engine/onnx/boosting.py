"""Phrase boosting for the NumPy greedy decoders (the ONNX backend), with the NeMo backend's strength.

A `WordBoost` becomes a token trie with failure links (Aho-Corasick), built once per distinct list
and cached. A decoding item carries its node; at each step the non-blank tokens' scores gain
`bias(node)`: entering a phrase's first token `boost * SCORE_PER_BOOST`, each further token
`DEPTH_SCALING` times that plus the log of its depth, and a token that leaves a phrase half-way gives
back what the phrase had gained (a completed phrase keeps it). As in NeMo's label-looping fusion,
the unboosted scores decide whether a token is emitted at all, and the boosted ones which token, so a
boost corrects a misheard word and never adds or drops one. Without a SentencePiece model in the
export (a community directory), this backend cannot spell phrases and does not boost.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parakeet_serve.errors import quote
from parakeet_serve.word_boost import DEPTH_SCALING, SCORE_PER_BOOST, BuiltCache, WordBoost

log = logging.getLogger(__name__)


@dataclass
class _Node:
    score: float = 0.0  # gained by the tokens from the root to here
    ends: bool = False  # a phrase ends here: leaving keeps its gain
    children: dict[int, int] = field(default_factory=dict)  # token -> node
    fail: int = 0  # the longest proper suffix that is also a path from the root


class PhraseTree:
    """A boost's trie; nodes are ints, 0 the root. Bias vectors are computed once per node reached."""

    def __init__(self, phrases: list[tuple[list[int], float]], vocabulary: int) -> None:
        self._vocabulary = vocabulary
        self._nodes = [_Node()]
        for tokens, gain in phrases:
            self._add(tokens, gain)
        self._link()
        self._bias: dict[int, np.ndarray] = {}

    def _add(self, tokens: list[int], gain: float) -> None:
        node = 0
        for depth, token in enumerate(tokens):
            step = gain if depth == 0 else gain * DEPTH_SCALING + math.log(depth + 1)
            child = self._nodes[node].children.get(token)
            if child is None:
                child = len(self._nodes)
                self._nodes.append(_Node(self._nodes[node].score + step))
                self._nodes[node].children[token] = child
            else:  # a prefix shared with a stronger phrase keeps the stronger gain
                self._nodes[child].score = max(self._nodes[child].score, self._nodes[node].score + step)
            node = child
        self._nodes[node].ends = True

    def _link(self) -> None:
        """Failure links, breadth first: a child's is where its parent's failure link continues with its token."""
        queue = deque(self._nodes[0].children.values())
        while queue:
            node = queue.popleft()
            for token, child in self._nodes[node].children.items():
                fail = self._nodes[node].fail
                while fail and token not in self._nodes[fail].children:
                    fail = self._nodes[fail].fail
                found = self._nodes[fail].children.get(token, 0)
                self._nodes[child].fail = found if found != child else 0
                queue.append(child)

    def next(self, node: int, token: int) -> int:
        """The node after emitting `token` from `node`."""
        while True:
            child = self._nodes[node].children.get(token)
            if child is not None:
                return child
            if node == 0:
                return 0
            node = self._nodes[node].fail

    def bias(self, node: int) -> np.ndarray:
        """What each token (not the blank) gains from `node`: the score of where it leads less this node's."""
        cached = self._bias.get(node)
        if cached is None:
            here = self._nodes[node]
            cached = np.zeros(self._vocabulary, np.float32)
            if node:
                cached[:] = self.bias(here.fail) + (0.0 if here.ends else self._nodes[here.fail].score - here.score)
            for token, child in here.children.items():
                cached[token] = self._nodes[child].score - here.score
            self._bias[node] = cached
        return cached


class TreeBooster:
    """Phrase trees built from the export's SentencePiece model, cached by content; any thread."""

    logprob_per_unit = SCORE_PER_BOOST

    def __init__(self, tokenizer_model: Path, vocabulary: int) -> None:
        import sentencepiece

        self._tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_model))
        self._vocabulary = vocabulary
        pieces = (self._tokenizer.id_to_piece(i) for i in range(self._tokenizer.get_piece_size()))
        self._cased = any(c.isupper() for piece in pieces for c in piece)
        self._trees: BuiltCache[PhraseTree | None] = BuiltCache(self._build)

    def prepare(self, boost: WordBoost) -> None:
        self.tree(boost)

    def tree(self, boost: WordBoost) -> PhraseTree | None:
        """`boost`'s tree (None when the tokenizer can spell none of its phrases)."""
        return self._trees.get(boost)

    def _build(self, boost: WordBoost) -> PhraseTree | None:
        phrases = []
        for phrase, strength in boost.phrases:
            ids: list[Any] = self._tokenizer.encode(phrase if self._cased else phrase.lower())
            if not ids or self._tokenizer.unk_id() in ids:
                log.warning("boosted phrase skipped: the tokenizer cannot spell it", extra={"phrase": quote(phrase)})
                continue
            phrases.append(([int(i) for i in ids], strength * SCORE_PER_BOOST))
        return PhraseTree(phrases, self._vocabulary) if phrases else None
