"""Cutting long audio into pieces at its pauses, so each piece can be recognised (and answered) on its own."""

from __future__ import annotations

import numpy as np

FRAME_S = 0.02  # loudness is judged over 20 ms frames
LEAD_IN_FRAMES = 10  # a piece begins at most 0.2 s before the speech after a cut


def split_at_pauses(samples: np.ndarray, rate: int, max_s: float, search_s: float) -> list[tuple[int, int]]:
    """Spans [start, end) covering `samples`, each at most `max_s` seconds long: a span that would be
    longer ends in the longest pause of its last `search_s` seconds, so a cut falls between words rather
    than inside one. Audio no longer than `max_s` is one span (an empty audio too)."""
    frame = max(1, round(FRAME_S * rate))
    whole = len(samples) // frame
    energy = np.square(samples[: whole * frame].astype(np.float64)).reshape(whole, frame).mean(axis=1)
    longest = max(2, round(max_s * rate) // frame)
    search = min(longest - 1, max(1, round(search_s * rate) // frame))
    spans, start = [], 0
    while len(samples) - start > longest * frame:
        first = start // frame
        begin = first + longest - search
        end = (begin + _cut_in_longest_pause(energy[begin : first + longest])) * frame + frame // 2
        spans.append((start, end))
        start = end
    spans.append((start, len(samples)))
    return spans


def _cut_in_longest_pause(energy: np.ndarray) -> int:
    """A frame in the longest run of quiet frames (within 6 dB of the quietest, or 40 dB under the
    loudest): LEAD_IN_FRAMES before the speech that follows it, or its middle if that is later. Short
    leading silence suits the models: the demo model drops words after half a second of it."""
    quiet = energy <= max(4 * energy.min(), 1e-4 * energy.max())
    best_start, best_length, run_start = 0, 0, None
    for i, is_quiet in enumerate([*quiet, False]):
        if is_quiet and run_start is None:
            run_start = i
        elif not is_quiet and run_start is not None:
            if i - run_start > best_length:
                best_start, best_length = run_start, i - run_start
            run_start = None
    return best_start + max(best_length // 2, best_length - LEAD_IN_FRAMES)
