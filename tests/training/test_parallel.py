"""Data-parallel training: two real worker processes joined over gloo on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from training import parallel


def _worker_step(out: Path) -> None:
    """What one worker of a training update does, with gradients and weights that differ per worker."""
    me = parallel.rank()
    torch.manual_seed(100 + me)  # different initial weights: broadcast must make them worker 0's
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    parallel.broadcast_parameters(model)
    weights = [p.detach().flatten().tolist() for p in model.parameters()]
    model[0].weight.grad = torch.full((2, 3), float(me + 1))
    model[0].bias.grad = torch.tensor([1.0, -1.0]) * (me + 1) * 10
    parallel.average_gradients(model.parameters())  # the second layer has no gradient: stays None
    result = {
        "world": parallel.world(),
        "weights": weights,
        "grad": model[0].weight.grad.flatten().tolist(),
        "bias_grad": model[0].bias.grad.tolist(),
        "unused": model[1].weight.grad is None,
        "furthest": parallel.furthest(0.25 * (me + 1)),
    }
    (out / f"rank{me}.json").write_text(json.dumps(result))


def test_two_workers_average_gradients_share_weights_and_agree_on_progress(tmp_path: Path) -> None:
    parallel.launch(_worker_step, 2, tmp_path)
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert first["world"] == second["world"] == 2
    assert first["weights"] == second["weights"]
    torch.manual_seed(100)
    assert first["weights"][0] == torch.nn.Linear(3, 2).weight.flatten().tolist()  # worker 0's own
    for result in (first, second):
        assert result["grad"] == [1.5] * 6  # the mean of 1 and 2
        assert result["bias_grad"] == [15.0, -15.0]
        assert result["unused"]
        assert result["furthest"] == 0.5


def test_one_worker_runs_in_process_without_a_group(tmp_path: Path) -> None:
    parallel.launch(_worker_step, 1, tmp_path)
    alone = json.loads((tmp_path / "rank0.json").read_text())
    assert alone["world"] == 1
    assert alone["grad"] == [1.0] * 6 and alone["bias_grad"] == [10.0, -10.0]
    assert alone["furthest"] == 0.25
