"""The bundled demo model recognises real (synthesised) speech through the server and the Riva client."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import riva.client
import soundfile as sf

from parakeet_serve.engine import NemoEngine
from parakeet_serve.evaluation import error_counts, read_manifest
from tests.conftest import LoopThread, Served, start_server

PACKAGE = Path(str(resources.files("parakeet_serve")))
SEEN_VOICES = PACKAGE / "eval" / "demo-eval-seen-voices.jsonl"
HELD_OUT_VOICE = PACKAGE / "eval" / "demo-eval-held-out-voice.jsonl"
EVERYDAY = PACKAGE / "eval" / "demo-eval-everyday.jsonl"


@pytest.fixture(scope="module")
def demo(loop_thread: LoopThread, demo_engine: NemoEngine) -> Iterator[Served]:
    served = start_server(loop_thread, demo_engine, model_id="demo")
    yield served
    served.stop()


# The shipped model's WER through the server is 27.18%, 50.69% and 67.25% (the targets,
# 10%, 20% and 25%, are missed: training/README.md); a point and a half more means something broke.
BAR = {"seen voices": 0.287, "held-out voice": 0.522, "everyday": 0.688}


def wer_through_server(served: Served, manifest: Path) -> float:
    asr = served.asr()
    config = riva.client.RecognitionConfig(language_code="en-US", enable_automatic_punctuation=True)
    errors = words = 0
    for entry in read_manifest(manifest):
        transcript = asr.offline_recognize(entry.audio.read_bytes(), config).results[0].alternatives[0].transcript
        e, n, _, _ = error_counts(entry.text, transcript)
        errors, words = errors + e, words + n
    return errors / words


@pytest.fixture(scope="module")
def server_wer(demo: Served) -> dict[str, float]:
    """Word error rates of the held-out sets through Recognize and the Riva client."""
    return {split: wer_through_server(demo, manifest) for split, manifest in
            (("seen voices", SEEN_VOICES), ("held-out voice", HELD_OUT_VOICE), ("everyday", EVERYDAY))}


@pytest.mark.parametrize("split", sorted(BAR))
def test_accuracy_holds_the_shipped_models_level(server_wer: dict[str, float], split: str) -> None:
    assert server_wer[split] <= BAR[split]


def speech_region(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """First and last 10 ms frame whose energy is within 35 dB of the loudest."""
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    energy = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    voiced = np.flatnonzero(energy > energy.max() - 35)
    return voiced[0] * 160 / rate, (voiced[-1] + 1) * 160 / rate


def test_sample_words_and_their_times_fall_in_the_spoken_region(demo: Served) -> None:
    sample = PACKAGE / "samples" / "quickstart.wav"
    expected = sample.with_suffix(".txt").read_text().split()
    config = riva.client.RecognitionConfig(language_code="en-US", enable_word_time_offsets=True)
    words = demo.asr().offline_recognize(sample.read_bytes(), config).results[0].alternatives[0].words
    assert [w.word for w in words] == expected
    samples, rate = sf.read(sample, dtype="float32")
    start, end = speech_region(samples, rate)
    assert start > 0.2  # the sample has 0.25 s of leading silence
    assert abs(words[0].start_time / 1000 - start) < 0.3
    assert abs(words[-1].end_time / 1000 - end) < 0.4
    for w in words:
        assert start - 0.3 <= w.start_time / 1000 < w.end_time / 1000 <= end + 0.4


NEMO_TRANSCRIBE = """
import sys
from nemo.collections.asr.models import ASRModel
model = ASRModel.restore_from(sys.argv[1], map_location="cpu")
print("TRANSCRIPT", model.transcribe([sys.argv[2]], verbose=False)[0].text)
"""


def test_nemo_itself_transcribes_the_packaged_model() -> None:
    """The .nemo is a standard NeMo checkpoint: NeMo's own restore_from and transcribe() run it, no code of ours."""
    sample = PACKAGE / "samples" / "quickstart.wav"
    out = subprocess.run([sys.executable, "-c", NEMO_TRANSCRIBE, str(PACKAGE / "models" / "demo.nemo"), str(sample)],
                         capture_output=True, text=True, timeout=300, check=True)
    transcript = next(line for line in out.stdout.splitlines() if line.startswith("TRANSCRIPT ")).split(" ", 1)[1]
    assert transcript == sample.with_suffix(".txt").read_text().strip()


def test_eval_command_prints_wer_and_cer(demo: Served, tmp_path: Path) -> None:
    subset = tmp_path / "subset.jsonl"
    lines = SEEN_VOICES.read_text().splitlines()[:12]
    subset.write_text("".join(
        line.replace('"audio_filepath": "', f'"audio_filepath": "{SEEN_VOICES.parent}/') + "\n" for line in lines
    ))
    out = subprocess.run(
        [sys.executable, "-m", "parakeet_serve", "eval", "--model", "demo", "--manifest", str(subset)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    summary = out.stdout.strip().splitlines()[-1]
    assert "WER" in summary and "CER" in summary and "12 utterances" in summary
    wer = float(summary.split("WER ")[1].split("%")[0])
    assert wer == pytest.approx(100 * wer_through_server(demo, subset), abs=0.01)  # the server agrees
    assert "subset.jsonl" in out.stderr  # the progress bar
