"""What one request or stream cost, filled in by the core for the front end's log line and metrics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from parakeet_serve.telemetry.timing import Timing


@dataclass
class Usage:
    audio_s: float = 0.0  # audio recognised
    queue_wait_s: float = 0.0  # the longest wait of any of its work items
    compute_s: float = 0.0  # its share of the batches it ran in

    def add(self, audio_s: float, timings: Iterable[Timing]) -> None:
        self.audio_s += audio_s
        for timing in timings:
            self.queue_wait_s = max(self.queue_wait_s, timing.queue_wait_s)
            self.compute_s += timing.share_s
