"""The locust file, headless for a few seconds against a live demo-model server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import Served

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtest" / "locustfile.py"


def test_locust_users_succeed_and_record_interim_and_final_latency(demo_server: Served) -> None:
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--users", "4", "--spawn-rate", "4",
        "--run-time", "14s", "--stop-timeout", "15", "--host", demo_server.address, "--json", "--only-summary",
        "--files-per-stream", "1", "--gap-s", "1.0", "--loglevel", "WARNING",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = {(s["method"], s["name"]): s for s in json.loads(done.stdout)}
    assert set(stats) == {("grpc", "StreamingRecognize"), ("grpc", "Recognize"), ("latency", "interim"),
                          ("latency", "final")}, done.stderr[-2000:]
    for entry in stats.values():
        assert entry["num_requests"] > 0 and entry["num_failures"] == 0, entry
    assert stats["latency", "interim"]["num_requests"] > stats["grpc", "StreamingRecognize"]["num_requests"]
