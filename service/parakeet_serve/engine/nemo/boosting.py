"""Per-request phrase boosting inside batched greedy transducer decoding (NeMo's boosting trees).

Each distinct `WordBoost` becomes a boosting tree, built once and cached by content, and while a
request or stream uses it, a model in the decoder's biasing multi-model. Every batch item decodes
with its own model id (-1: none), so an unboosted item decodes exactly as it would without any
boosting in the batch.

Strength (`parakeet_serve.word_boost`): a phrase's first token gains `boost * SCORE_PER_BOOST` in the
joint's log-probabilities, each further token of it more; a phrase abandoned half-way gives the gain
back. Greedy fusion changes which token is emitted, never whether one is: a boost corrects a
misheard word, not a dropped one.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

from parakeet_serve.errors import quote
from parakeet_serve.word_boost import DEPTH_SCALING, SCORE_PER_BOOST, BuiltCache, WordBoost

log = logging.getLogger(__name__)

MODELS_LOADED = 64  # unused models kept in the decoder before the least recently used leaves


class PhraseBooster:
    """Boosting trees for a transducer's greedy label-looping decoder with per-item biasing (`greedy`, NeMo's
    batched greedy decoding of the model). `prepare` and `release` may be called from any thread; `acquire`
    only on the inference thread."""

    logprob_per_unit = SCORE_PER_BOOST

    def __init__(self, model: Any, greedy: Any) -> None:
        self.computer = greedy.decoding_computer
        self._tokenizer = model.tokenizer
        pieces = (self._tokenizer.ids_to_tokens([i])[0] for i in range(self._tokenizer.vocab_size))
        self._cased = any(c.isupper() for piece in pieces for c in piece)
        self._lock = threading.Lock()
        self._trees: BuiltCache[Any] = BuiltCache(self._build)
        self._loaded: OrderedDict[WordBoost, int] = OrderedDict()
        self._pins: Counter[WordBoost] = Counter()

    def prepare(self, boost: WordBoost) -> None:
        """Build `boost`'s tree unless it is cached (a few ms per hundred phrases)."""
        self._tree(boost)

    def acquire(self, boosts: Sequence[WordBoost | None]) -> list[int]:
        """Each boost's model id in the decoder (loading it if needed), pinned until `release`."""
        ids = []
        for boost in boosts:
            if boost is None:
                ids.append(-1)
                continue
            with self._lock:
                self._pins[boost] += 1
            if boost not in self._loaded:
                tree = self._tree(boost)
                self._loaded[boost] = -1 if tree is None else self._multi_model.add_model(tree, alpha=1.0)
            self._loaded.move_to_end(boost)
            ids.append(self._loaded[boost])
        self._unload_unused()
        return ids

    def release(self, boosts: Sequence[WordBoost | None]) -> None:
        with self._lock:
            for boost in boosts:
                if boost is not None:
                    self._pins[boost] -= 1

    @property
    def _multi_model(self) -> Any:
        return self.computer.biasing_multi_model

    def _tree(self, boost: WordBoost) -> Any:
        return self._trees.get(boost)

    def _build(self, boost: WordBoost) -> Any:
        from nemo.collections.asr.parts.context_biasing.boosting_graph_batched import GPUBoostingTreeModel
        from nemo.collections.asr.parts.context_biasing.context_graph_universal import ContextGraph

        tokens, phrases, scores = [], [], []
        unknown = self._tokenizer.unk_id
        for phrase, strength in boost.phrases:
            text = phrase if self._cased else phrase.lower()
            ids = self._tokenizer.text_to_ids(text)
            if not ids or unknown in ids:
                log.warning("boosted phrase skipped: the tokenizer cannot spell it", extra={"phrase": quote(phrase)})
                continue
            tokens.append(ids)
            phrases.append(text)
            scores.append(strength * SCORE_PER_BOOST)
        if not tokens:
            return None
        graph = ContextGraph(context_score=1.0, depth_scaling=DEPTH_SCALING)
        graph.build(token_ids=tokens, phrases=phrases, scores=scores)
        return GPUBoostingTreeModel.from_context_graph(graph, vocab_size=self._tokenizer.vocab_size,
                                                       unk_score=0.0, final_eos_score=0.0)

    def _unload_unused(self) -> None:
        with self._lock:
            unused = [b for b in self._loaded if self._pins[b] <= 0]
        for boost in unused[: max(0, len(self._loaded) - MODELS_LOADED)]:
            model_id = self._loaded.pop(boost)
            if model_id >= 0:
                self._multi_model.remove_model(model_id)

