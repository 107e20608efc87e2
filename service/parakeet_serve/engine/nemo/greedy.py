"""NeMo's greedy transducer decoding straight to token spans, for whole audios and stream steps alike.

NeMo's label-looping computer (RNN-T and TDT, each item with its own phrase-boosting model) is
called directly and its alignment read to the host in one copy. NeMo's public decoding would
also build a Hypothesis object per item, with character offsets and copies, on the inference
thread while a GPU waits (issue 19 measured 0.1-0.8 s per 128-item batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from parakeet_serve.engine.types import TokenSpan


def transducer_spans(
    computer: Any, encoded: torch.Tensor, lengths: torch.Tensor, piece: Callable[[int], str],
    starts: Sequence[int], previous: Any = None, boost_ids: torch.Tensor | None = None,
) -> tuple[list[list[TokenSpan]], Any]:
    """Each item's emitted tokens with encoder frames [start, end) counted from `starts[i]`, and the
    decoder state after them (to continue a stream). `encoded` is (batch, dim, frames); `boost_ids`
    gives each item's boosting model (-1: none); `previous` is a batched state to continue from."""
    hyps, state = computer(x=encoded.transpose(1, 2), out_len=lengths, prev_batched_state=previous,
                           multi_biasing_ids=boost_ids)
    frames = int(encoded.shape[-1])  # the shape is on the host: no wait for the device
    counts, labels, times, durations, confidence = _host_lists(hyps.get_data_without_blank(), len(starts), frames)
    out = []
    for row, origin in enumerate(starts):
        spans = []
        for k in range(counts[row]):
            start = origin + times[row][k]
            width = durations[row][k] if durations is not None else 1
            conf = confidence[row][k] if confidence is not None else 1.0
            spans.append(TokenSpan(labels[row][k], piece(labels[row][k]), start, start + max(width, 1), conf))
        out.append(spans)
    return out, state


def exact_tdt_durations(computer: Any, device: torch.device) -> None:
    """Make a TDT computer that decodes without CUDA graphs record each token's own duration.

    NeMo 3.0's batched TDT decoder (`torch_impl`, the path on a CPU) stores, for an item that found its
    token before others in the batch, the duration last predicted for another item: word end times
    then depend on what else was in the batch (NVIDIA-NeMo/Speech#16097, fixed after 3.0). Recording
    every step, blanks included, stores each step's own duration, and the blanks are dropped on reading
    (`get_data_without_blank`). The CUDA-graph decoder is right as it is, and its record-every-step
    variant is not, so it is left alone.
    """
    from nemo.collections.asr.parts.submodules.transducer_decoding.tdt_label_looping import (
        GreedyBatchedTDTLabelLoopingComputer,
    )

    graphs = device.type == "cuda" and computer.cuda_graphs_mode is not None
    if isinstance(computer, GreedyBatchedTDTLabelLoopingComputer) and not graphs:
        computer.record_all_steps = True


# Tokens an item may emit beyond one per encoder frame before a second read is needed: speech gives
# about one token every two or three 80 ms frames, so a read as wide as the frames almost always holds all.
_SLACK = 8


def _host_lists(data: tuple[torch.Tensor | None, ...], rows: int, frames: int) -> tuple[list | None, ...]:
    """The decoder's results as host lists, in one read from the device: the rows' token counts and every
    field's rows, as many columns as `frames` (plus a little) in one copy; a second read only for an item
    that emitted more. With CUDA graphs its buffers keep the largest batch it was captured for, thousands
    of columns wide (converting them whole cost ~50 ms a 128-row batch), and each read of a GPU tensor
    waits for the device."""
    lengths, *fields = data
    present = [x for x in fields if x is not None]
    width = min(int(present[0].shape[1]), frames + _SLACK)
    packed = _read(lengths, present, rows, width)
    counts = packed[:, 0].astype(np.int64)
    used = int(counts.max(initial=0))
    if used > width:
        width = used
        packed = _read(lengths, present, rows, width)
    columns = iter(packed[:, 1:].reshape(rows, len(present), width)[:, :, :used].transpose(1, 0, 2))
    return (counts.tolist(), *(None if x is None else _as_list(next(columns), x.dtype) for x in fields))


def _read(lengths: torch.Tensor, fields: list[torch.Tensor], rows: int, width: int) -> np.ndarray:
    """(rows, 1 + fields x width): each row's count, then its fields' first `width` columns; float64 holds
    every label, frame and duration exactly, and the confidences."""
    parts = [lengths[:rows, None]] + [x[:rows, :width] for x in fields]
    return torch.cat([x.to(torch.float64) for x in parts], dim=1).cpu().numpy()


def _as_list(values: np.ndarray, dtype: torch.dtype) -> list:
    return (values if dtype.is_floating_point else values.astype(np.int64)).tolist()
