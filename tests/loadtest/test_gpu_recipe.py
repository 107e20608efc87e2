"""The GPU recipe as a lent machine gets it: its smoke stage runs and says so in JSON, and the carried wheelhouse
plus the working tree fit what travels (64 MiB)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAVELS_MIB = 64


def test_the_smoke_stage_runs_a_tiny_model_offline_and_streamed_and_writes_its_json(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT / 'service'}:{ROOT}", "PARAKEET_DEVICE": "cpu",
           "HOME": str(tmp_path)}
    subprocess.run([sys.executable, str(ROOT / "loadtest" / "gpu" / "smoke.py"), str(tmp_path)], env=env,
                   check=True, timeout=300, capture_output=True)
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert result["ok"] and result["offline_items"] == 3 and result["stream_frames"] > 0, result
    assert result["decoding"].startswith("GreedyBatchedTDTLabelLoopingComputer")
    assert result["stream_step_syncs"] is None  # counted on CUDA only


def test_the_wheelhouse_and_the_tree_travel_together_under_the_limit(tmp_path: Path) -> None:
    """Downloads the pinned wheels from PyPI (27 MiB), as `wheelhouse.sh` does before a lease."""
    subprocess.run(["bash", str(ROOT / "loadtest" / "gpu" / "wheelhouse.sh"), str(tmp_path / "whl")], check=True,
                   timeout=600, capture_output=True, env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                                                          "PYTHON": sys.executable, "HOME": str(tmp_path)})
    wheels = sum(p.stat().st_size for p in (tmp_path / "whl").glob("*.whl"))
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.split(b"\0")
    tree = sum((ROOT / name.decode()).stat().st_size for name in listed if name and (ROOT / name.decode()).is_file())
    assert (wheels + tree) / 2**20 < TRAVELS_MIB, (wheels / 2**20, tree / 2**20)
