"""The GPU recipe's random models: calibrated to a trained model's token rate, so that decoding costs
what it would on speech (a random joint emits on almost every frame)."""

from __future__ import annotations

from pathlib import Path

from loadtest.gpu.build_models import TOKENS_PER_FRAME, bench_audio, calibrate
from parakeet_serve.engine import load_engine
from training.blueprint import Blueprint, build_model, train_tokenizer


def tokens_per_frame(path: Path, audios: list) -> float:
    engine = load_engine(str(path))
    tokens = sum(len(t.best.tokens) for t in engine.transcribe(audios))
    return tokens / (sum(len(a) for a in audios) / engine.sample_rate / engine.frame_shift_s)


def test_a_random_tdt_joint_is_calibrated_to_a_trained_models_token_rate(tmp_path: Path) -> None:
    audios = bench_audio(8)
    model = build_model(Blueprint(head="tdt"), train_tokenizer(tmp_path / "tokenizer", vocab_size=64))
    model.save_to(str(tmp_path / "raw.nemo"))
    assert tokens_per_frame(tmp_path / "raw.nemo", audios) > 2 * TOKENS_PER_FRAME  # the problem
    reached = calibrate(model, audios)
    model.save_to(str(tmp_path / "calibrated.nemo"))
    assert abs(reached - TOKENS_PER_FRAME) < 0.05
    # as the server decodes it, after a save and load (word-grouping frames counted the same way)
    assert abs(tokens_per_frame(tmp_path / "calibrated.nemo", audios) - TOKENS_PER_FRAME) < 0.08
