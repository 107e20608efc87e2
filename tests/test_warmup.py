"""`parakeet-serve warmup` (the cache-fill hook and warm-up Job) and `transcribe --check` (`helm test`)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from parakeet_serve.engine import NemoEngine
from parakeet_serve.warmup import expected_text, judge, sample_path
from tests.conftest import LoopThread, Served, start_server
from tests.test_cli import CLI

SAMPLE_TEXT = sample_path().with_suffix(".txt").read_text().strip()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_warmup_recognises_the_sample_and_leaves_its_line_as_the_termination_message(tmp_path: Path) -> None:
    message = tmp_path / "termination-log"
    message.touch()  # the kubelet creates it; warmup only writes into it
    result = run_cli("warmup", "--model", "demo", "--termination-log", str(message))
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    report = json.loads(line)
    assert report["ok"] is True and report["error"] is None
    assert report["model"] == "demo" and report["device"] == "cpu"
    assert report["transcript"] == SAMPLE_TEXT
    assert report["load_seconds"] > 0 and 0 < report["rtf"] < 5
    assert report["audio_seconds"] == pytest.approx(3.6, abs=1.5)
    assert message.read_text().strip() == line


def test_warmup_of_a_model_that_cannot_load_fails_with_its_reason_in_the_same_line(tmp_path: Path) -> None:
    message = tmp_path / "termination-log"
    message.touch()
    missing = tmp_path / "missing.nemo"
    result = run_cli("warmup", "--model", str(missing), "--termination-log", str(message))
    assert result.returncode == 1
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is False and str(missing) in report["error"]
    assert json.loads(message.read_text()) == report


def test_warmup_writes_no_termination_message_outside_kubernetes(tmp_path: Path) -> None:
    absent = tmp_path / "no-such-dir" / "termination-log"
    result = run_cli("warmup", "--model", str(tmp_path / "missing.nemo"), "--termination-log", str(absent))
    assert result.returncode == 1 and not absent.parent.exists()


@pytest.mark.parametrize(
    ("model", "transcript", "fails_with"),
    [
        ("demo", SAMPLE_TEXT, None),
        ("demo", SAMPLE_TEXT.upper() + ".", None),  # the same words, punctuated
        ("demo", " ".join(SAMPLE_TEXT.split()[:-1]), "instead of"),  # a word short
        ("demo", "", "instead of"),
        ("nvidia/parakeet-tdt-0.6b-v2", "any words at all", None),
        ("nvidia/parakeet-tdt-0.6b-v2", " . ", "no words"),
    ],
)
def test_the_check_wants_the_exact_words_from_the_demo_model_and_some_words_from_any_other(
    model: str, transcript: str, fails_with: str | None
) -> None:
    failure = judge(transcript, expected_text(model))
    assert failure is None if fails_with is None else fails_with in (failure or "")


@pytest.fixture(scope="module")
def demo_server(loop_thread: LoopThread, demo_engine: NemoEngine) -> Iterator[Served]:
    served = start_server(loop_thread, demo_engine, model_id="demo")
    yield served
    served.stop()


def test_transcribe_check_passes_against_a_serving_demo_model(demo_server: Served) -> None:
    result = run_cli("transcribe", "--check", "--server", demo_server.address)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == SAMPLE_TEXT
    assert lines[-1] == f"check passed: {demo_server.address} is SERVING demo"


def test_transcribe_check_fails_while_the_server_is_not_serving(loop_thread: LoopThread, engine: NemoEngine) -> None:
    loading = start_server(loop_thread, engine, load=False)
    try:
        result = run_cli("transcribe", "--check", "--server", loading.address)
    finally:
        loading.stop()
    assert result.returncode == 1
    assert "health is NOT_SERVING, not SERVING" in result.stderr


@pytest.mark.parametrize(
    ("transcript", "max_wer", "passes"),
    [
        ("the train to the airport leaves at four", 0.0, True),
        ("the train to the airport leaves at five", 0.0, False),
        ("the train to the airport leaves at five", 0.125, True),  # 1 error in 8 words
        ("the train to the airport leaves at five", 0.1, False),
    ],
)
def test_an_expected_text_allows_up_to_max_wer(transcript: str, max_wer: float, passes: bool) -> None:
    failure = judge(transcript, "the train to the airport leaves at four", max_wer)
    assert (failure is None) is passes, failure


def test_warmup_with_an_expected_text_the_model_does_not_say_fails(tmp_path: Path) -> None:
    result = run_cli("warmup", "--model", "demo", "--expected-text", "call rachel young back later",
                     "--termination-log", str(tmp_path / "absent"))
    assert result.returncode == 1
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is False and "instead of 'call rachel young back later'" in report["error"]
