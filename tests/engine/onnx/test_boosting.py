"""The NumPy decoders' phrase trees: what each token gains, and what leaving a phrase gives back."""

import math

import pytest

from parakeet_serve.engine.onnx.boosting import PhraseTree
from parakeet_serve.word_boost import DEPTH_SCALING

A, B, C, D, OTHER = 1, 2, 3, 4, 9
GAIN = 0.6


def walk(tree: PhraseTree, tokens: list[int]) -> float:
    """The total gain of emitting `tokens` in turn from the root."""
    node, total = 0, 0.0
    for token in tokens:
        total += float(tree.bias(node)[token])
        node = tree.next(node, token)
    return total


def test_a_phrase_gains_more_with_each_token_and_keeps_it_when_complete() -> None:
    tree = PhraseTree([([A, B, C], GAIN)], vocabulary=10)
    first, second = GAIN, GAIN * DEPTH_SCALING + math.log(2)
    assert walk(tree, [A]) == pytest.approx(first)
    assert walk(tree, [A, B]) == pytest.approx(first + second)
    whole = walk(tree, [A, B, C])
    assert whole > first + second
    assert walk(tree, [A, B, C, OTHER, OTHER]) == pytest.approx(whole)  # completed: kept


def test_a_phrase_left_half_way_gives_its_gain_back() -> None:
    tree = PhraseTree([([A, B, C], GAIN)], vocabulary=10)
    assert walk(tree, [A, B, OTHER]) == pytest.approx(0.0, abs=1e-6)
    assert walk(tree, [OTHER, OTHER]) == 0.0  # unboosted tokens gain nothing


def test_leaving_one_phrase_can_continue_another_through_its_failure_link() -> None:
    tree = PhraseTree([([A, B, C], GAIN), ([B, D], GAIN)], vocabulary=10)
    # after A B, D leaves the first phrase but completes "B D": the total is what "B D" alone gains
    assert walk(tree, [A, B, D]) == pytest.approx(walk(tree, [B, D]))
    assert walk(tree, [B, D]) > 0


def test_a_shared_prefix_keeps_the_stronger_phrases_gain() -> None:
    tree = PhraseTree([([A, B], GAIN), ([A, C], 3 * GAIN)], vocabulary=10)
    assert walk(tree, [A]) == pytest.approx(3 * GAIN)
    assert walk(tree, [A, C]) > walk(tree, [A, B]) > 0
