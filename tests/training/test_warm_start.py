"""A new run started from a trained transducer: an RNN-T's weights become a TDT model's, and the run
begins at the hybrid phase with a warm-up of its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from training import checkpoint
from training.blueprint import Blueprint, build_model, train_tokenizer
from training.train import PEAK_LR, WARMUP, Plan, learning_rate, train, warm_start

TDT = Blueprint(head="hybrid_tdt_ctc", n_layers=1, d_model=32, n_heads=2, subsampling_channels=16, pred_hidden=32,
                joint_hidden=32, vocab_size=48, streaming=True, att_context=(16, 1), dropout=0.0)
RNNT = dataclasses.replace(TDT, head="hybrid_rnnt_ctc")


@pytest.fixture(scope="module")
def rnnt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A saved RNN-T (random, but other than a new model of the seed below would be) and its weights."""
    root = tmp_path_factory.mktemp("rnnt")
    model = build_model(RNNT, train_tokenizer(root / "tokenizer", vocab_size=48), seed=7)
    model.save_to(str(root / "rnnt.nemo"))
    return root / "rnnt.nemo", {k: v.clone() for k, v in model.state_dict().items()}


def test_an_rnnt_starts_a_tdt_run_at_the_hybrid_phase(rnnt: tuple[Path, dict[str, torch.Tensor]],
                                                      tmp_path: Path) -> None:
    path, source = rnnt
    model, progress = warm_start(path, TDT, seed=1, tokenizer=tmp_path / "tokenizer", distil=6000)
    got = model.state_dict()
    assert (progress.phase, progress.step, progress.warm_from) == ("conformer", 6000, 6000)
    assert all(torch.equal(got[k], source[k]) for k in source if not k.startswith("joint.joint_net."))
    output = next(k for k in got if k.startswith("joint.joint_net.") and k.endswith(".weight"))
    tokens = source[output].shape[0]  # the vocabulary and the blank; TDT's durations follow
    assert got[output].shape[0] == tokens + 5
    assert torch.equal(got[output][:tokens], source[output])
    assert (tmp_path / "tokenizer" / "tokenizer.model").read_bytes() == next(
        (path.parent / "tokenizer").glob("tokenizer.model")).read_bytes()


def test_a_model_of_another_shape_is_refused(rnnt: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    wider = dataclasses.replace(TDT, d_model=64)
    with pytest.raises(SystemExit, match=r"does not fit the hybrid_tdt_ctc model: encoder\..* is \(.*\), wanted"):
        warm_start(rnnt[0], wider, seed=1, tokenizer=tmp_path / "tokenizer", distil=0)


def test_the_warm_up_counts_from_where_the_optimiser_started() -> None:
    assert learning_rate(6000, 80000, 8000, PEAK_LR, warm_from=6000) == pytest.approx(PEAK_LR / WARMUP)
    assert learning_rate(6000 + WARMUP, 80000, 8000, PEAK_LR, warm_from=6000) == pytest.approx(PEAK_LR)
    assert learning_rate(6000, 80000, 8000, PEAK_LR) == pytest.approx(PEAK_LR)


def test_a_run_from_an_rnnt_trains_only_the_hybrid_phase(rnnt: tuple[Path, dict[str, torch.Tensor]],
                                                         manifest: Path, tmp_path: Path) -> None:
    """Through `train`: no teacher or distillation updates, the plan's hybrid updates, then the export."""
    saved = tmp_path / "checkpoint.pt"
    plan = Plan(teacher=3, distil=3, updates=5, decay=1, batch_seconds=6.0)
    train(manifest, tmp_path / "tdt.nemo", plan, seed=3, bp=TDT, workers=1, checkpoint_path=saved, init=rnnt[0])
    state = checkpoint.load(saved)
    assert (state.progress.phase, state.progress.step) == ("done", 5)
    assert state.optimizer["state"][0]["step"] == 2  # updates 3 and 4: the hybrid phase's only
    assert (tmp_path / "tdt.nemo").exists()
