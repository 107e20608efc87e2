"""The endpointer's notion of speech: louder than the noise floor and near the utterance's peak."""

import math

import numpy as np

from parakeet_serve.engine.loudness import Loudness

MELS = 80


def frames(*spans: tuple[float, int]) -> np.ndarray:
    """Log-mel frames whose total power is `db` decibels, `n` frames of each (db, n)."""
    levels = [db for db, n in spans for _ in range(n)]
    power = np.array(levels, dtype=np.float32) * math.log(10) / 10
    return np.tile(power - math.log(MELS), (MELS, 1))


def loud(loudness: Loudness, log_mel: np.ndarray) -> list[int]:
    return np.flatnonzero(loudness.loud(log_mel)).tolist()


def test_speech_between_quiet_stretches_is_loud_and_the_quiet_is_not() -> None:
    loudness = Loudness()
    got = loud(loudness, frames((-60, 50), (0, 30), (-60, 50), (-5, 20), (-60, 50)))
    assert got == list(range(50, 80)) + list(range(130, 150))


def test_steady_noise_ten_decibels_under_speech_is_not_speech() -> None:
    loudness = Loudness()
    got = loud(loudness, frames((-10, 100), (0, 40), (-10, 100)))
    assert got == list(range(100, 140))


def test_faint_hiss_after_clean_speech_is_silence() -> None:
    loudness = Loudness()
    loud(loudness, frames((-120, 20), (0, 40)))  # digital silence, then speech: the floor stays very low
    assert loud(loudness, frames((-35, 50))) == []


def test_a_new_utterance_measures_its_own_peak() -> None:
    loudness = Loudness()
    loud(loudness, frames((-120, 20), (0, 40), (-120, 20)))
    assert loud(loudness, frames((-40, 10))) == []  # 40 dB under this utterance's peak
    loudness.start_utterance()
    assert loud(loudness, frames((-40, 10))) == list(range(10))  # a quiet talker is speech in the next one


def test_the_floor_follows_noise_that_grows() -> None:
    loudness = Loudness()
    loud(loudness, frames((-60, 100)))
    assert loud(loudness, frames((-30, 10))) == list(range(10))  # at first it is louder than the floor
    assert loud(loudness, frames((-30, 1500)))[-1] < 1200  # a steady sound becomes the floor within seconds
