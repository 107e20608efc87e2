"""Phrase boosting costs only the batches that use it: NeMo's biasing model (a fusion step at every
decoding step, a Triton kernel on a GPU) is advanced for boosted items only, offline and streaming."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from nemo.collections.asr.parts.context_biasing.biasing_multi_model import GPUBiasingMultiModel

from parakeet_serve.audio.decode import decode_audio
from parakeet_serve.audio.formats import AudioFormat
from parakeet_serve.engine import NemoEngine
from parakeet_serve.engine.streaming import StreamInput
from parakeet_serve.word_boost import WordBoost
from tests.conftest import MISHEARD

BOOST = WordBoost(((MISHEARD.said, 20.0),))


@pytest.fixture(scope="module")
def audios() -> list[np.ndarray]:
    """The misheard clip (boosted where a test boosts) between two others of the evaluation set."""
    clips = [MISHEARD.clip.with_name("seen-101.ogg"), MISHEARD.clip, MISHEARD.clip.with_name("seen-120.ogg")]
    return [decode_audio(c.read_bytes(), AudioFormat(), target_rate=16000, max_seconds=60).mono() for c in clips]


@pytest.fixture
def advanced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The batch size of each step the biasing model is advanced for."""
    sizes: list[int] = []
    original = GPUBiasingMultiModel.advance

    def spy(self: GPUBiasingMultiModel, states: object, **kwargs: object) -> object:
        sizes.append(int(states.shape[0]))
        return original(self, states, **kwargs)

    monkeypatch.setattr(GPUBiasingMultiModel, "advance", spy)
    yield sizes


def test_an_unboosted_batch_never_advances_the_biasing_model(demo_engine: NemoEngine, advanced: list[int],
                                                             audios: list[np.ndarray]) -> None:
    plain = [t.best.text for t in demo_engine.transcribe(audios)]
    assert advanced == []
    mixed = [t.best.text for t in demo_engine.transcribe(audios, boosts=[None, BOOST, None])]
    assert advanced, "a boosted item is decoded with its biasing model"
    assert MISHEARD.corrects(plain[1], mixed[1])
    assert mixed[0] == plain[0] and mixed[2] == plain[2]


def test_only_boosted_streams_decode_with_the_biasing_model(demo_engine: NemoEngine, advanced: list[int],
                                                            audios: list[np.ndarray]) -> None:
    streamer = demo_engine.streamer(left_context_s=10.0)
    step = streamer.samples_for_chunks(2)
    length = max(len(a) for a in audios)

    def streamed(boosts: list[WordBoost | None]) -> list[list[int]]:
        states = [streamer.open(b) for b in boosts]
        tokens: list[list[int]] = [[] for _ in audios]
        for at in range(0, length, step):
            last = at + step >= length
            inputs = [StreamInput(st, a[at : at + step], last) for st, a in zip(states, audios, strict=True)]
            for row, out in enumerate(streamer.step(inputs)):
                tokens[row].extend(t.token_id for t in out.tokens)
        for st in states:
            streamer.close(st)
        return tokens

    plain = streamed([None, None, None])
    assert advanced == []
    mixed = streamed([None, BOOST, None])
    assert advanced and set(advanced) == {1}, "only the boosted stream's row is fused"
    assert mixed[0] == plain[0] and mixed[2] == plain[2] and mixed[1] != plain[1]
    assert all(plain)
