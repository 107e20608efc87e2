"""Grouping tokens into words."""

import itertools
import random

import pytest

from parakeet_serve.audio.decode import decode_audio
from parakeet_serve.audio.formats import AudioFormat
from parakeet_serve.engine import NemoEngine
from parakeet_serve.engine.types import TokenSpan, Word
from parakeet_serve.engine.words import GrowingWords, group_words, settle_times
from parakeet_serve.warmup import sample_path


def detok(pieces: dict[int, str]):
    return lambda ids: "".join(pieces[i] for i in ids).replace("\u2581", " ").strip()


def test_sentencepiece_pieces_group_at_word_starts_with_min_confidence() -> None:
    pieces = {1: "\u2581hel", 2: "lo", 3: "\u2581wor", 4: "ld", 5: "\u2581a"}
    tokens = [
        TokenSpan(1, pieces[1], 0, 1, 0.9), TokenSpan(2, pieces[2], 2, 3, 0.5),
        TokenSpan(3, pieces[3], 5, 6, 0.8), TokenSpan(4, pieces[4], 7, 8, 0.7), TokenSpan(5, pieces[5], 9, 9, 1.0),
    ]
    words = group_words(tokens, detok(pieces), frame_shift_s=0.08)
    assert [(w.text, w.start_s, w.end_s, w.confidence) for w in words] == [
        ("hello", 0.0, 0.24, 0.5), ("world", 0.4, 0.64, 0.7), ("a", 0.72, 0.8, 1.0)
    ]


def test_character_vocabularies_split_at_space_tokens() -> None:
    pieces = {1: "h", 2: "i", 3: " ", 4: "y", 5: "o"}
    tokens = [TokenSpan(i, pieces[i], i, i + 1, 0.5) for i in (1, 2, 3, 4, 5)]
    words = group_words(tokens, detok(pieces), frame_shift_s=0.04)
    assert [w.text for w in words] == ["hi", "yo"]


def test_no_tokens_no_words() -> None:
    assert group_words([], detok({}), 0.08) == []


@pytest.mark.parametrize("seed", range(20))
def test_words_grouped_as_a_sequence_grows_equal_those_of_the_whole(seed: int) -> None:
    """A stream's interims group only the words not yet finished; whatever the increments, the words
    must be those of grouping the whole sequence (SentencePiece and character pieces, lone word
    marks and space tokens, a sequence that starts inside a word), and `clear` must start afresh."""
    rng = random.Random(seed)
    pieces = {1: "\u2581he", 2: "llo", 3: "\u2581", 4: " ", 5: "x", 6: "\u2581a", 7: "b"}
    growing = GrowingWords(detok(pieces), frame_shift_s=0.08)
    for _ in range(3):
        tokens: list[TokenSpan] = []
        while len(tokens) < 40:
            tokens += [TokenSpan(i, pieces[i], len(tokens) + k, len(tokens) + k + 1, rng.random())
                       for k, i in enumerate(rng.choices(list(pieces), k=rng.randint(0, 5)))]
            assert growing.of(tokens) == group_words(tokens, detok(pieces), 0.08)
        growing.clear()


def test_words_without_durations_end_where_the_next_begins_and_share_a_frame_they_began_in() -> None:
    shift = 0.08
    words = [Word("does", 1.60, 1.68, 1.0), Word("it", 1.68, 1.76, 1.0), Word("take", 1.92, 2.00, 1.0),
             Word("to", 1.92, 2.00, 1.0), Word("get", 2.00, 2.08, 1.0), Word("miami", 2.56, 3.12, 0.9),
             Word("later", 4.00, 4.08, 1.0)]
    settled = settle_times(words, shift)
    assert [(w.text, w.start_s, w.end_s) for w in settled] == [
        ("does", 1.60, 1.68), ("it", 1.68, 1.92), ("take", 1.92, 1.96), ("to", 1.96, 2.00), ("get", 2.00, 2.08),
        ("miami", 2.56, 3.12), ("later", 4.00, 4.08)]  # 0.48 s before miami and 0.88 s before later are pauses
    assert [w.confidence for w in settled] == [w.confidence for w in words]


def test_the_demo_models_words_neither_overlap_nor_share_their_times(demo_engine: NemoEngine) -> None:
    audio = decode_audio(sample_path().read_bytes(), AudioFormat(), target_rate=16000, max_seconds=60).mono()
    words = demo_engine.transcribe([audio])[0].best.words
    assert len(words) >= 8
    assert all(a.end_s <= b.start_s for a, b in itertools.pairwise(words)), words
    assert all(w.start_s < w.end_s for w in words), words
