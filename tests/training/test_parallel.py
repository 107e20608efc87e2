"""Data-parallel training: two real worker processes joined over gloo on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.conftest import running
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


def _train_forever(out: Path) -> None:
    partial = out / f"partial{parallel.rank()}"
    partial.write_text(str(os.getpid()))
    partial.replace(out / f"worker{parallel.rank()}")  # whole, or not there yet
    while True:
        time.sleep(0.1)


def test_workers_stop_when_the_launching_process_is_killed(tmp_path: Path) -> None:
    launcher = subprocess.Popen([sys.executable, "-c", "from pathlib import Path; from training import parallel; "
                                 "from tests.training.test_parallel import _train_forever; "
                                 f"parallel.launch(_train_forever, 2, Path({str(tmp_path)!r}))"],
                                cwd=Path(__file__).parents[2])
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("worker*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [int(p.read_text()) for p in tmp_path.glob("worker*")]
        assert len(workers) == 2, "the workers never started"
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 10
        while any(map(running, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if running(pid)]
    finally:
        launcher.kill()
        for pid in filter(running, workers):
            os.kill(pid, signal.SIGKILL)

