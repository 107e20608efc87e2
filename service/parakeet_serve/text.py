"""Transcript text shaping shared by results and evaluation."""

from __future__ import annotations

import dataclasses
import re

from parakeet_serve.engine.types import Hypothesis

# Apostrophes inside words ("don't", "o'clock") are kept; every other punctuation mark goes.
_PUNCTUATION = re.compile(r"[^\w\s']|_|(?<!\w)'|'(?!\w)")
_SPACES = re.compile(r"\s+")


def strip_punctuation_and_case(text: str) -> str:
    """Lower-case `text` and remove punctuation, as Riva returns text without automatic punctuation."""
    return _SPACES.sub(" ", _PUNCTUATION.sub(" ", text.lower())).strip()


def shape_hypothesis(hyp: Hypothesis, word_times: bool, punctuation: bool) -> Hypothesis:
    """A hypothesis as the client asked for it: words only on request, punctuation and case only on request."""
    words = hyp.words if word_times else ()
    if punctuation:
        return dataclasses.replace(hyp, words=words)
    stripped = (dataclasses.replace(w, text=strip_punctuation_and_case(w.text)) for w in words)
    return Hypothesis(strip_punctuation_and_case(hyp.text), hyp.confidence, tuple(w for w in stripped if w.text),
                      hyp.tokens)
