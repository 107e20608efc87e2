"""OpenAI's `prompt` as word boosting: Parakeet has no text prompt, but a prompt's vocabulary is what
a boost is for. Its comma-, semicolon- or line-separated phrases of at most `PROMPT_PHRASE_WORDS`
words are boosted at `PROMPT_BOOST` (Riva's scale); longer stretches are context sentences, not
vocabulary, and are left out."""

from __future__ import annotations

import re

from parakeet_serve.word_boost import SpeechContext

PROMPT_BOOST = 50.0
PROMPT_PHRASE_WORDS = 4


def prompt_contexts(prompt: str) -> tuple[SpeechContext, ...]:
    phrases = tuple(p.strip() for p in re.split(r"[,;\n]", prompt) if 0 < len(p.split()) <= PROMPT_PHRASE_WORDS)
    return (SpeechContext(phrases, PROMPT_BOOST),) if phrases else ()
