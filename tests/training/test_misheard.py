"""The misheard-word finder (`training/misheard.py`) agrees with the boosting tests' fixture."""

from __future__ import annotations

from parakeet_serve.engine import NemoEngine
from parakeet_serve.evaluation import read_manifest
from tests.conftest import DEMO_EVAL, MISHEARD
from training.misheard import candidates, substitutions


def test_only_swapped_words_the_hypothesis_holds_once_are_substitutions() -> None:
    assert list(substitutions("Call me back in ten minutes.", "call me bat in tan minutes")) == [
        ("back", "bat"), ("ten", "tan")]
    assert list(substitutions("call me back", "call me")) == []  # a deletion
    assert list(substitutions("ten to ten", "tan to ten")) == []  # the said word is elsewhere in it
    assert list(substitutions("ten to six", "tan to tan")) == []  # the heard word twice


def test_the_shipped_fixtures_misheard_word_is_a_candidate(demo_engine: NemoEngine) -> None:
    entries = [e for e in read_manifest(DEMO_EVAL / "demo-eval-seen-voices.jsonl") if e.audio == MISHEARD.clip]
    found = candidates(demo_engine, entries, boost=20.0)
    assert [(c.said, c.heard) for c in found] == [(MISHEARD.said, MISHEARD.heard)]
    assert MISHEARD.corrects(found[0].plain, found[0].boosted)
