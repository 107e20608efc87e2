"""Transcript text shaping shared by results and evaluation."""

from __future__ import annotations

import re

# Apostrophes inside words ("don't", "o'clock") are kept; every other punctuation mark goes.
_PUNCTUATION = re.compile(r"[^\w\s']|_|(?<!\w)'|'(?!\w)")
_SPACES = re.compile(r"\s+")


def strip_punctuation_and_case(text: str) -> str:
    """Lower-case `text` and remove punctuation, as Riva returns text without automatic punctuation."""
    return _SPACES.sub(" ", _PUNCTUATION.sub(" ", text.lower())).strip()
