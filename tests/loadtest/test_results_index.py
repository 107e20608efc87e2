"""`loadtest/results/`: every recorded figure is in the index, and the index names only files that are there."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "loadtest" / "results"


def test_the_index_lists_exactly_the_recorded_files() -> None:
    listed = re.findall(r"^- `([^`]+\.json)`$", (RESULTS / "README.md").read_text(), re.MULTILINE)
    assert len(listed) == len(set(listed)), "a file listed twice"
    assert sorted(listed) == sorted(p.name for p in RESULTS.glob("*.json"))
