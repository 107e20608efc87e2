"""NeMo's greedy transducer decoding straight to token spans, for whole audios and stream steps alike.

NeMo's label-looping computer (RNN-T and TDT, each item with its own phrase-boosting model) is
called directly and its alignment read to the host once per field. NeMo's public decoding would
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
    counts, labels, times, durations, confidence = _host_lists(hyps.get_data_without_blank(), len(starts))
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


def _host_lists(data: tuple[torch.Tensor | None, ...], rows: int) -> tuple[list | None, ...]:
    """The decoder's results as host lists, in two reads from the device: the rows' token counts, then every
    field's rows and columns in use in one copy. With CUDA graphs its buffers keep the largest batch it was
    captured for, thousands of columns wide (converting them whole cost ~50 ms a 128-row batch), and each
    read of a GPU tensor waits for the device (a stream step made five)."""
    lengths, *fields = data
    counts = lengths[:rows].tolist()
    used = max(counts, default=0)
    present = [x for x in fields if x is not None]
    # float64 holds every label, frame and duration exactly, and the confidences
    packed = iter(torch.stack([x[:rows, :used].to(torch.float64) for x in present]).cpu().numpy())
    return (counts, *(None if x is None else _as_list(next(packed), x.dtype) for x in fields))


def _as_list(values: np.ndarray, dtype: torch.dtype) -> list:
    return (values if dtype.is_floating_point else values.astype(np.int64)).tolist()
