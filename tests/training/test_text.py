"""The demo corpus: broad vocabulary, held-out sentence structures, and an evaluation set it never writes."""

from __future__ import annotations

import pytest

from training import text
from training.data import everyday_sentences
from training.words import lexicon


def test_training_sentences_use_thousands_of_words_and_rarely_repeat() -> None:
    sentences = text.unique_sentences(1, 10000)
    words = {w for s in sentences for w in s.split()}
    assert len(words) >= 2500
    assert len(lexicon().common) == 5000 and len(lexicon().verbs) > 300 and len(lexicon().nouns) > 1500
    # no wording dominates: the most common first three words start under 3% of sentences
    starts = {}
    for s in sentences:
        key = " ".join(s.split()[:3])
        starts[key] = starts.get(key, 0) + 1
    assert max(starts.values()) < 0.03 * len(sentences)


def test_held_out_frames_never_reach_training(monkeypatch: pytest.MonkeyPatch) -> None:
    marked = [lambda r, i=i: f"zqframe{i}" for i in range(len(text.FRAMES))]  # no English word starts so
    monkeypatch.setattr(text, "FRAMES", marked)

    def frames(sentences: list[str]) -> set[str]:
        return {w for s in sentences for w in s.split() if w.startswith("zqframe")}

    used = frames(text.unique_sentences(3, 3000))
    held_out = {f"zqframe{i}" for i in text.HELD_OUT_FRAMES}
    assert used and not used & held_out
    assert used | held_out == {f"zqframe{i}" for i in range(len(marked))}  # every other frame is trained
    assert frames(text.unique_sentences(4, 200, stream=text.held_out_structures)) == held_out


def test_the_hand_written_sentences_are_not_the_generators() -> None:
    everyday = everyday_sentences()
    assert len(everyday) == 100 == len(set(everyday))
    generated = set(text.unique_sentences(1, 30000))
    assert not generated & set(everyday)


@pytest.mark.parametrize(("raw", "tidy"), [
    ("book  a   apple", "book an apple"),
    ("a one way ticket", "a one way ticket"),
    ("a university", "a university"),
    ("a idea", "an idea"),
])
def test_articles_agree(raw: str, tidy: str) -> None:
    assert text.tidy(raw) == tidy


def test_numbers_are_written_out() -> None:
    assert text.say_number(0) == "zero"
    assert text.say_number(115) == "one hundred and fifteen"
    assert text.say_number(40_007) == "forty thousand seven"
