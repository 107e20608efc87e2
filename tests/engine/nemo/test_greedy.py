"""Reading NeMo's label-looping results: the spans, and only the part of its buffers in use."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from parakeet_serve.engine.nemo.greedy import transducer_spans

CAPTURED_ROWS, CAPTURED_COLUMNS = 128, 3750  # a CUDA-graph computer's buffers, sized for its largest batch


class OversizedHyps:
    """Three items in use in buffers of the captured size: item 0 emitted two tokens, item 1 none, item 2 one."""

    def get_data_without_blank(self) -> tuple[torch.Tensor, ...]:
        lengths = torch.zeros(CAPTURED_ROWS, dtype=torch.long)
        labels = torch.full((CAPTURED_ROWS, CAPTURED_COLUMNS), 99)
        times = torch.zeros((CAPTURED_ROWS, CAPTURED_COLUMNS), dtype=torch.long)
        durations = torch.ones((CAPTURED_ROWS, CAPTURED_COLUMNS), dtype=torch.long)
        confidence = torch.full((CAPTURED_ROWS, CAPTURED_COLUMNS), 0.5)
        lengths[:3] = torch.tensor([2, 0, 1])
        labels[0, :2], times[0, :2], durations[0, :2] = torch.tensor([5, 6]), torch.tensor([1, 4]), torch.tensor([2, 0])
        labels[2, 0], times[2, 0] = 9, 3
        return lengths, labels, times, durations, confidence


def test_only_the_rows_and_columns_in_use_are_read_back_in_two_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read of a GPU tensor waits for the device: the counts, then one copy of all fields in use."""
    read: list[int] = []
    for method in ("tolist", "cpu", "item"):  # what reads a GPU tensor (.numpy() refuses one)
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method, lambda self, *a, _o=original, **k: read.append(self.numel())
                            or _o(self, *a, **k))

    def computer(**_: Any) -> tuple[OversizedHyps, str]:
        return OversizedHyps(), "state"

    spans, state = transducer_spans(computer, torch.zeros(3, 4, 10), torch.tensor([10, 10, 10]), lambda t: f"p{t}",
                                    starts=[0, 0, 100])
    assert state == "state"
    assert [[(s.token_id, s.piece, s.start_frame, s.end_frame, s.confidence) for s in row] for row in spans] == [
        [(5, "p5", 1, 3, 0.5), (6, "p6", 4, 5, 0.5)], [], [(9, "p9", 103, 104, 0.5)]]
    assert read == [3, 4 * 3 * 2], read  # the lengths of the rows in use, then each field's rows x 2 columns
