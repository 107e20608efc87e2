"""Reading NeMo's label-looping results: the spans, and only the part of its buffers in use."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from parakeet_serve.engine import NemoEngine, load_engine
from parakeet_serve.engine.nemo.greedy import transducer_spans
from tests.conftest import varied_tdt_model

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


@pytest.fixture
def read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every read of a tensor to the host (what waits for a GPU; .numpy() refuses one)."""
    sizes: list[int] = []
    for method in ("tolist", "cpu", "item"):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method, lambda self, *a, _o=original, **k: sizes.append(self.numel())
                            or _o(self, *a, **k))
    return sizes


def test_only_the_rows_in_use_are_read_back_in_one_read(read: list[int]) -> None:
    """Each read of a GPU tensor waits for the device: one copy of the counts and all fields, as many
    columns as the items have frames (plus a little), not the buffers' thousands."""

    def computer(**_: Any) -> tuple[OversizedHyps, str]:
        return OversizedHyps(), "state"

    spans, state = transducer_spans(computer, torch.zeros(3, 4, 10), torch.tensor([10, 10, 10]), lambda t: f"p{t}",
                                    starts=[0, 0, 100])
    assert state == "state"
    assert [[(s.token_id, s.piece, s.start_frame, s.end_frame, s.confidence) for s in row] for row in spans] == [
        [(5, "p5", 1, 3, 0.5), (6, "p6", 4, 5, 0.5)], [], [(9, "p9", 103, 104, 0.5)]]
    assert read == [3 * (1 + 4 * (10 + 8))], read  # the rows' counts and each field's rows x (frames + 8)


class TalkativeHyps(OversizedHyps):
    """Item 0 emitted 12 tokens in 2 frames: more than a read as wide as the frames (plus 8) holds."""

    def get_data_without_blank(self) -> tuple[torch.Tensor, ...]:
        lengths, labels, times, durations, confidence = super().get_data_without_blank()
        lengths[0] = 12
        labels[0, :12] = torch.arange(12)
        durations[0, :12] = 0
        return lengths, labels, times, durations, confidence


def test_an_item_with_more_tokens_than_frames_is_read_whole_in_a_second_read(read: list[int]) -> None:
    spans, _ = transducer_spans(lambda **_: (TalkativeHyps(), None), torch.zeros(3, 4, 2), torch.tensor([2, 2, 2]),
                                lambda t: f"p{t}", starts=[0, 0, 0])
    assert [s.token_id for s in spans[0]] == list(range(12))
    assert [s.token_id for s in spans[2]] == [9] and spans[1] == []
    assert read == [3 * (1 + 4 * 10), 3 * (1 + 4 * 12)], read


@pytest.fixture(scope="module")
def tdt_engine(tmp_path_factory: pytest.TempPathFactory) -> NemoEngine:
    return load_engine(str(varied_tdt_model(tmp_path_factory.mktemp("tdt"), blank_bias=1.0)))


@torch.inference_mode()
def _spans(engine: NemoEngine, encoded: torch.Tensor) -> list[list[tuple[int, int, int]]]:
    lengths = torch.full((encoded.shape[0],), encoded.shape[-1])
    out, _ = transducer_spans(engine.greedy_computer, encoded, lengths, str, [0] * encoded.shape[0])
    return [[(s.token_id, s.start_frame, s.end_frame) for s in row] for row in out]


def test_a_tdt_tokens_duration_is_its_own_whatever_else_is_in_the_batch(tdt_engine: NemoEngine) -> None:
    """NeMo 3.0's batched TDT decoder on the CPU gave a token the duration predicted for another item
    (NVIDIA-NeMo/Speech#16097): the same audio got other word end times in another batch."""
    encoded = torch.randn(6, 64, 40, generator=torch.Generator().manual_seed(0)) * 3
    alone = [_spans(tdt_engine, encoded[i : i + 1])[0] for i in range(len(encoded))]
    assert sum(len(row) for row in alone) > 60
    assert len({end - start for row in alone for _, start, end in row}) >= 3  # durations do vary
    assert _spans(tdt_engine, encoded) == alone
