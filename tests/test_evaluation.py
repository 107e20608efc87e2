"""Error counting and manifests for `parakeet-serve eval`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from parakeet_serve.evaluation import ManifestEntry, error_counts, evaluate, read_manifest


def test_counts_use_the_same_normalisation_on_both_sides() -> None:
    assert error_counts("Call Anna, please.", "call anna please") == (0, 3, 0, 16)
    words, n_words, chars, n_chars = error_counts("set a timer", "set the timer now")
    assert (words, n_words) == (2, 3)  # one substitution, one insertion
    assert n_chars == len("set a timer") and chars > 0


def test_empty_hypothesis_is_all_deletions() -> None:
    assert error_counts("one two three", "")[:2] == (3, 3)


def test_manifest_paths_are_relative_to_the_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav", "duration": 1.5, "text": "hi"}\n\n'
                        '{"audio_filepath": "/abs/b.wav", "text": "yo"}\n')
    entries = read_manifest(manifest)
    assert entries == [ManifestEntry(tmp_path / "a.wav", 1.5, "hi"), ManifestEntry(Path("/abs/b.wav"), 0.0, "yo")]


def test_bad_manifest_line_names_file_and_line(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav", "text": "x"}\n{"text": "no audio"}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2"):
        read_manifest(manifest)


def test_evaluate_sums_errors_over_batches(tmp_path: Path) -> None:
    import soundfile as sf

    entries = []
    for i, text in enumerate(["one two", "three four five", "six"]):
        sf.write(tmp_path / f"{i}.wav", np.zeros(8000, np.float32), 16000)
        entries.append(ManifestEntry(tmp_path / f"{i}.wav", 0.5, text))
    answers = iter(["one two", "three for five", ""])
    report = evaluate(lambda audios: [next(answers) for _ in audios], entries, 16000, batch_size=2)
    assert (report.utterances, report.words, report.word_errors) == (3, 6, 2)
    assert report.wer == pytest.approx(2 / 6)
    assert report.audio_s == pytest.approx(1.5)


def test_lead_silence_goes_before_each_clip(tmp_path: Path) -> None:
    import soundfile as sf

    sf.write(tmp_path / "a.wav", np.full(8000, 0.5, np.float32), 16000)
    heard = []
    report = evaluate(lambda audios: heard.extend(audios) or ["x"] * len(audios),
                      [ManifestEntry(tmp_path / "a.wav", 0.5, "x")], 16000, lead_silence_s=1.0)
    (audio,) = heard
    assert len(audio) == 24000 and not audio[:16000].any() and audio[16000:].min() > 0.49
    assert report.audio_s == pytest.approx(1.5)
