"""When one item of work (a Recognize track or a stream step) waited and ran, filled by the scheduler."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Timing:
    kind: str  # "offline", "stream" (a step) or "final" (a stream's utterance, second pass)
    enqueued_ns: int = field(default_factory=time.time_ns)
    started_ns: int = 0  # its batch started (0: it never ran)
    finished_ns: int = 0
    batch_size: int = 0

    @property
    def queue_wait_s(self) -> float:
        return max(0, self.started_ns - self.enqueued_ns) / 1e9 if self.started_ns else 0.0

    @property
    def share_s(self) -> float:
        """This item's share of its batch's compute time."""
        return (self.finished_ns - self.started_ns) / 1e9 / self.batch_size if self.batch_size else 0.0
