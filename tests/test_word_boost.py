"""Checking a request's speech contexts: Riva's semantics, the server's limits, one cache key per phrase list."""

from __future__ import annotations

import pytest

from parakeet_serve.errors import InvalidRequest
from parakeet_serve.word_boost import MAX_BOOST, BoostLimits, SpeechContext, WordBoost, word_boost

LIMITS = BoostLimits(max_phrases=3, max_phrase_chars=20)


def test_contexts_become_sorted_phrases_with_their_strongest_boost() -> None:
    boost = word_boost([SpeechContext(("rachel  young", "anna"), 20.0), SpeechContext(("anna",), 40.0)], LIMITS)
    assert boost == WordBoost((("anna", 40.0), ("rachel young", 20.0)))
    same = word_boost([SpeechContext(("anna", "rachel young"), 20.0), SpeechContext(("anna",), 40.0)], LIMITS)
    assert same == boost and hash(same) == hash(boost)  # one cache entry for the same request


def test_nothing_to_boost_is_none() -> None:
    assert word_boost([], LIMITS) is None
    assert word_boost([SpeechContext(("", "  "), 20.0), SpeechContext(("anna",), 0.0)], LIMITS) is None


def test_boosts_past_the_maximum_act_as_the_maximum() -> None:
    assert word_boost([SpeechContext(("anna",), 1e6)], LIMITS) == WordBoost((("anna", MAX_BOOST),))


@pytest.mark.parametrize(("contexts", "said"), [
    ([SpeechContext(("anna",), -5.0)], "negative boosts are not supported"),
    ([SpeechContext(("anna",), float("nan"))], "boosts must be 0 or more"),
    ([SpeechContext(("a", "b", "c", "d"), 10.0)], "boosts 4 phrases; this server takes at most 3"),
    ([SpeechContext(("x" * 500,), 10.0)], "takes at most 20 characters per phrase"),
])
def test_bad_contexts_are_refused_with_one_sentence(contexts: list[SpeechContext], said: str) -> None:
    with pytest.raises(InvalidRequest, match=said) as refused:
        word_boost(contexts, LIMITS)
    assert len(str(refused.value)) < 200  # a long phrase is quoted only in part
