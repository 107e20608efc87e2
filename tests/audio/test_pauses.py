"""Cutting long audio at its pauses: every cut in a pause when there is one, no piece over the limit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from parakeet_serve.audio.pauses import split_at_pauses
from tests.conftest import speechlike

RATE = 16000


def covers(spans: list[tuple[int, int]], length: int) -> bool:
    return spans[0][0] == 0 and spans[-1][1] == length and all(a[1] == b[0] for a, b in itertools.pairwise(spans))


@pytest.mark.parametrize("seconds", [0.0, 0.3, 10.0, 30.0])
def test_audio_within_the_limit_is_one_piece(seconds: float) -> None:
    samples = speechlike(seconds)[0] if seconds else np.zeros(0, np.float32)
    assert split_at_pauses(samples, RATE, max_s=30, search_s=10) == [(0, len(samples))]


def test_cuts_fall_in_the_pauses_and_pieces_stay_under_the_limit() -> None:
    # 4 s of speech, then 0.5 s of silence, over and over: 90 s in all.
    speech, pause = speechlike(4.0)[0], np.zeros(RATE // 2, np.float32)
    block = np.concatenate([speech, pause])
    samples = np.tile(block, 20)
    spans = split_at_pauses(samples, RATE, max_s=30, search_s=10)
    assert covers(spans, len(samples)) and len(spans) >= 3
    for start, end in spans:
        assert end - start <= 30 * RATE
    for _, cut in spans[:-1]:
        assert cut % len(block) >= len(speech), "a cut inside speech"


def test_audio_without_a_pause_is_still_cut_at_the_limit() -> None:
    samples = speechlike(75.0)[0]
    spans = split_at_pauses(samples, RATE, max_s=20, search_s=5)
    assert covers(spans, len(samples)) and len(spans) >= 4
    assert all(15 * RATE <= end - start <= 20 * RATE for start, end in spans[:-1])
