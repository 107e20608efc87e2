"""A training run stopped anywhere and resumed from its checkpoint ends with the weights of a run that
never stopped: the schedule counts updates, and the checkpoint holds the optimiser, the random state
and each worker's place in its data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training import checkpoint
from training.blueprint import Blueprint
from training.train import Plan, train

TINY = Blueprint(head="hybrid_tdt_ctc", n_layers=1, d_model=32, n_heads=2, subsampling_channels=16, pred_hidden=32,
                 joint_hidden=32, vocab_size=48, streaming=True, att_context=(16, 1), dropout=0.1)
# 3 teacher updates, 3 of distillation, 3 of the hybrid TDT loss (the last 2 decaying)
PLAN = Plan(teacher=3, distil=3, updates=6, decay=2, batch_seconds=6.0)


def _weights(nemo_file: Path) -> dict[str, torch.Tensor]:
    from nemo.collections.asr.models import ASRModel

    return ASRModel.restore_from(str(nemo_file), map_location="cpu").state_dict()


@pytest.fixture(scope="module")
def unbroken(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    whole = tmp_path_factory.mktemp("whole")
    train(manifest, whole / "model.nemo", PLAN, seed=3, bp=TINY, workers=1, checkpoint_path=whole / "checkpoint.pt")
    return _weights(whole / "model.nemo")


# The first sitting stops inside the teacher's phase, at its end, and inside the distillation.
@pytest.mark.parametrize(("stop_after", "where"), [(2, ("teacher", 2)), (3, ("conformer", 0)), (5, ("conformer", 2))])
def test_a_resumed_run_ends_where_an_unbroken_one_does(
    manifest: Path, tmp_path: Path, unbroken: dict[str, torch.Tensor], stop_after: int, where: tuple[str, int]
) -> None:
    broken, saved = tmp_path / "broken.nemo", tmp_path / "broken" / "checkpoint.pt"
    train(manifest, broken, Plan(**{**PLAN.__dict__, "sitting_updates": stop_after}), seed=3, bp=TINY, workers=1,
          checkpoint_path=saved)
    assert not broken.exists()
    state = checkpoint.load(saved)
    assert (state.progress.phase, state.progress.step) == where
    assert state.blueprint == TINY and state.progress.positions[0].index > 0
    train(manifest, broken, PLAN, seed=3, bp=TINY, workers=1, resume=saved, checkpoint_path=saved)
    assert checkpoint.load(saved).progress.phase == "done"

    got = _weights(broken)
    assert unbroken.keys() == got.keys()
    changed = [k for k in unbroken if not torch.equal(unbroken[k], got[k])]
    assert not changed, f"{len(changed)} tensors differ, e.g. {changed[:3]}"


def test_the_comparison_tells_runs_apart(manifest: Path, tmp_path: Path) -> None:
    """What the test above compares can tell runs apart: a second seed ends elsewhere."""
    train(manifest, tmp_path / "a.nemo", PLAN, seed=3, bp=TINY, workers=1, checkpoint_path=tmp_path / "a" / "c.pt")
    train(manifest, tmp_path / "b.nemo", PLAN, seed=4, bp=TINY, workers=1, checkpoint_path=tmp_path / "b" / "c.pt")
    a, b = _weights(tmp_path / "a.nemo"), _weights(tmp_path / "b.nemo")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_a_run_resumed_with_other_batches_is_refused(manifest: Path, tmp_path: Path) -> None:
    """The data positions count batches of the checkpoint's size: other batches would silently skip or repeat."""
    saved = tmp_path / "checkpoint.pt"
    train(manifest, tmp_path / "m.nemo", Plan(**{**PLAN.__dict__, "sitting_updates": 1}), seed=3, bp=TINY, workers=1,
          checkpoint_path=saved)
    with pytest.raises(SystemExit, match="count 6-second batches: resume with --batch-seconds 6"):
        train(manifest, tmp_path / "m.nemo", Plan(**{**PLAN.__dict__, "batch_seconds": 8.0}), seed=3, bp=TINY,
              workers=1, resume=saved, checkpoint_path=saved)
