"""Fixtures of the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DEMO_EVAL as EVAL_DIR


@pytest.fixture(scope="package")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve utterances of real speech: the demo evaluation set's first clips."""
    lines = (EVAL_DIR / "demo-eval-seen-voices.jsonl").read_text().splitlines()[:12]
    entries = [{**json.loads(line), "audio_filepath": str(EVAL_DIR / json.loads(line)["audio_filepath"])}
               for line in lines]
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path
