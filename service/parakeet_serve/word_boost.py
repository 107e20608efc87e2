"""Word boosting requests: the phrases a request asks the decoder to favour, checked once, as plain data.

Riva's semantics: a request carries several speech contexts, each a list of phrases with one boost.
A boost is a positive number (Riva recommends 20 to 100); 0 leaves a phrase unboosted, more than
`MAX_BOOST` acts as `MAX_BOOST`, and negative boosts (Riva's "discourage this word") are refused:
greedy transducer decoding cannot make a word less likely without garbling it.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from parakeet_serve.errors import InvalidRequest, quote

MAX_BOOST = 100.0
# A boost's strength in both backends' decoders: a phrase's first token gains `boost * SCORE_PER_BOOST`
# in the joint's log-probabilities, each further token `DEPTH_SCALING` times that plus the log of its
# depth. On the demo model's evaluation set a first-token gain of 3 corrected the most names and
# colours and 5 already cost more words elsewhere than it won, so Riva's recommended boosts (20 to 100)
# map to 0.6 to 3.
SCORE_PER_BOOST = 0.03
DEPTH_SCALING = 2.0
TREES_CACHED = 256  # built phrase trees kept for requests that repeat their phrases


@dataclass(frozen=True)
class SpeechContext:
    """One context as the client sent it: phrases and the boost they share."""

    phrases: tuple[str, ...]
    boost: float


@dataclass(frozen=True)
class BoostLimits:
    max_phrases: int
    max_phrase_chars: int


@dataclass(frozen=True)
class WordBoost:
    """Phrases with their boost in (0, MAX_BOOST], sorted and without repeats, so that requests asking
    for the same phrases are one entry of the engine's cache."""

    phrases: tuple[tuple[str, float], ...]


def word_boost(contexts: Iterable[SpeechContext], limits: BoostLimits) -> WordBoost | None:
    """The request's contexts as one `WordBoost` (None when nothing is boosted), or `InvalidRequest`."""
    boosts: dict[str, float] = {}
    for index, context in enumerate(contexts):
        if not math.isfinite(context.boost) or context.boost < 0:
            raise InvalidRequest(f"speech_contexts[{index}] has boost {context.boost:g}: boosts must be 0 or more "
                                 "(negative boosts are not supported).")
        for phrase in context.phrases:
            words = " ".join(phrase.split())
            if len(words) > limits.max_phrase_chars:
                raise InvalidRequest(f"The phrase {quote(words)} in speech_contexts[{index}] is too long; this server "
                                     f"takes at most {limits.max_phrase_chars} characters per phrase.")
            if words and context.boost > 0:
                boosts[words] = max(boosts.get(words, 0.0), min(context.boost, MAX_BOOST))
    if len(boosts) > limits.max_phrases:
        raise InvalidRequest(f"The request boosts {len(boosts)} phrases; this server takes at most "
                             f"{limits.max_phrases}.")
    return WordBoost(tuple(sorted(boosts.items()))) if boosts else None


Built = TypeVar("Built")


class BuiltCache(Generic[Built]):
    """What a backend builds from a `WordBoost` (a boosting tree), for the most recently used
    `TREES_CACHED` boosts, so that requests repeating their phrases build nothing; any thread."""

    def __init__(self, build: Callable[[WordBoost], Built]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._built: OrderedDict[WordBoost, Built] = OrderedDict()

    def get(self, boost: WordBoost) -> Built:
        with self._lock:
            if boost in self._built:
                self._built.move_to_end(boost)
                return self._built[boost]
        built = self._build(boost)  # outside the lock: building may take a while
        with self._lock:
            self._built[boost] = built
            while len(self._built) > TREES_CACHED:
                self._built.popitem(last=False)
        return built
