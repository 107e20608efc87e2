"""`loadtest.wyoming_bench` briefly: both servers started, measured by wyoming-bench and by the concurrent driver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_both_servers_are_measured_and_only_the_shared_one_streams(tmp_path: Path) -> None:
    out = tmp_path / "wyoming.json"
    subprocess.run([sys.executable, "-m", "loadtest.wyoming_bench", "--limit", "3", "--connections", "2",
                    "--live", "1", "--json", str(out)], cwd=ROOT, check=True, timeout=900, capture_output=True)
    figures = json.loads(out.read_text())
    ours, theirs = figures["servers"]["parakeet-serve"], figures["servers"]["one-at-a-time"]
    for server in (ours, theirs):
        assert "ok=3 fail=0" in server["wyoming_bench"]["output"]
        (row,) = server["concurrent"]
        assert (row["connections"], row["utterances"]) == (2, 6)
        assert 0 < row["latency_p50_s"] <= row["latency_p95_s"] and row["utterances_per_s"] > 0
    assert "[streaming] ok=3" in ours["wyoming_bench"]["output"]
    assert "[streaming] ok=1 fail=0" in ours["wyoming_bench_live"]["output"] and "TTFT" in ours["wyoming_bench_live"][
        "output"]
    assert "wyoming_bench_live" not in theirs and "NOT SUPPORTED" in theirs["wyoming_bench"]["output"]
    # one model: both hear about the same words (their engines differ: NeMo's transcribe(), the server's own)
    assert abs(ours["concurrent"][0]["wer"] - theirs["concurrent"][0]["wer"]) <= 0.15
