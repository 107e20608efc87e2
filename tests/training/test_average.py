"""Averaging two models of one run (`training/average.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from parakeet_serve.engine.loader import load_nemo_model, quiet_nemo
from training.average import average, mix
from training.blueprint import Blueprint, build_model, train_tokenizer


def test_two_models_average_into_a_nemo_file_holding_their_mean(tmp_path: Path) -> None:
    quiet_nemo()
    tokenizer = train_tokenizer(tmp_path / "tokenizer", vocab_size=64)
    paths = [tmp_path / "a.nemo", tmp_path / "b.nemo"]
    for seed, path in enumerate(paths):
        build_model(Blueprint(head="tdt"), tokenizer, seed=seed).save_to(str(path))
    average(*paths, tmp_path / "mean.nemo", weight=0.25)
    a, b, mean = (load_nemo_model(p).state_dict() for p in (*paths, tmp_path / "mean.nemo"))
    name = "encoder.layers.0.self_attn.linear_q.weight"
    assert not torch.equal(a[name], b[name])
    assert torch.allclose(mean[name], 0.75 * a[name] + 0.25 * b[name], atol=1e-6)
    assert all(torch.equal(mean[k], b[k]) for k in b if not b[k].is_floating_point())


def test_models_of_different_shapes_are_refused() -> None:
    with pytest.raises(SystemExit, match="not one run"):
        mix({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 0.5)
