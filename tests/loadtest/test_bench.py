"""`parakeet-serve bench` briefly against the demo model: every JSON field present and sane."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parakeet_serve.bench.clips import RATE, joined, read_audio
from parakeet_serve.cli import main
from parakeet_serve.engine import NemoEngine
from parakeet_serve.evaluation import demo_manifest, read_manifest
from tests.conftest import LoopThread, Served, start_server


def run_bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    main(["bench", *args, "--json", str(out)])
    return json.loads(out.read_text())


def assert_percentiles(p: dict[str, float], upper_ms: float) -> None:
    assert set(p) == {"p50", "p95", "p99"}
    assert 0 < p["p50"] <= p["p95"] <= p["p99"] < upper_ms


def assert_context(doc: dict[str, Any], mode: str) -> None:
    assert doc["mode"] == mode
    assert doc["created"]
    machine = doc["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu"] and machine["torch"] and machine["parakeet_serve"]
    assert machine["nemo"] and machine["onnxruntime"] and "gpu" in machine
    assert [m["name"] for m in doc["server"]["models"]] and doc["server"]["target"]


def test_bench_offline_starts_a_server_and_compares_it_with_the_engine_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARAKEET_MICROBATCH_MAX_BATCH", "2")  # the server it starts batches at most 2
    (tmp_path / "boost.txt").write_text("anna\nrachel young\n")
    doc = run_bench(tmp_path, "offline", "--model", "demo", "--files", "6", "--concurrency", "3", "--rounds", "2",
                    "--boost", str(tmp_path / "boost.txt"), "--nemo-transcribe")
    assert_context(doc, "offline")
    assert doc["server"]["started_here"] is True
    assert doc["server"]["settings"]["model_id"] == "demo"
    # 3 callers, but the in-process side runs the batches of 2 the server runs
    assert doc["options"] == {"concurrency": 3, "warmup_requests": 8, "rounds": 2, "pcm": False, "max_batch": 2,
                              "channels": 1}
    assert doc["results"]["in_process_batch"] == 2
    # which decoder NeMo really ran, as the warmed-up server says (label looping; CUDA graphs only on a GPU)
    decoding = doc["server"]["models"][0]["parameters"]["decoding"]
    assert decoding == "GreedyBatchedTDTLabelLoopingComputer, cuda_graphs=off"
    r = doc["results"]
    assert r["requests"] == 12 and r["codes"] == {"OK": 12}
    assert 6 < r["audio_s"] < 60 and r["wall_s"] > 0
    assert r["rtfx"] == pytest.approx(r["audio_s"] / r["wall_s"], rel=0.01) == max(r["round_rtfx"])
    assert len(r["round_rtfx"]) == len(r["round_in_process_rtfx"]) == 2
    assert r["in_process_rtfx"] == pytest.approx(max(r["round_in_process_rtfx"]), rel=0.01)
    # Latencies span every round; no request outlasts the slowest round (same audio each round).
    slowest_wall_s = max(r["audio_s"] / rtfx for rtfx in r["round_rtfx"]) * 1.01  # (rounded figures)
    assert_percentiles(r["latency_ms"], upper_ms=slowest_wall_s * 1000 + 1)
    assert 0 <= r["wer"] <= 1.5 and 0 <= r["in_process_wer"] <= 1.5
    assert r["boosted_throughput_ratio"] == pytest.approx(r["boosted_rtfx"] / r["rtfx"], rel=0.01)
    assert 0 <= r["boosted_wer"] <= 1.5
    assert r["wer"] == pytest.approx(r["in_process_wer"], abs=0.02)  # same model, same files, same text
    assert r["in_process_rtfx"] > 0
    assert 0.1 < r["tokens_per_frame"] < 1.0  # the demo model's words at 80 ms frames
    assert r["server_overhead_ratio"] == pytest.approx(r["rtfx"] / r["in_process_rtfx"])
    # NeMo's own transcribe() on the same files: the same words (the .nemo is a standard one), its own speed
    assert r["nemo_transcribe_wer"] == pytest.approx(r["in_process_wer"], abs=0.02)
    assert r["engine_over_nemo_transcribe"] == pytest.approx(r["in_process_rtfx"] / r["nemo_transcribe_rtfx"])
    # the featuriser and encoder alone: the ceiling, which recognition (in process, served) is a fraction of
    assert r["encoder_rtfx"] > 0
    assert r["in_process_of_encoder"] == pytest.approx(r["in_process_rtfx"] / r["encoder_rtfx"])
    assert r["server_of_encoder"] == pytest.approx(r["rtfx"] / r["encoder_rtfx"])


def test_joined_clips_are_the_files_one_after_another_and_long_enough(tmp_path: Path) -> None:
    entries = read_manifest(demo_manifest())[:7]
    clips = joined(entries, 8.0, tmp_path)
    assert " ".join(c.text for c in clips) == " ".join(e.text for e in entries)  # every file, in order, once
    assert all(c.duration_s >= 8.0 for c in clips[:-1]) and 1 < len(clips) < len(entries)
    audio = np.concatenate([read_audio(c) for c in clips])
    files = sum(len(read_audio(e)) for e in entries)
    assert len(audio) == files + int(0.3 * RATE) * (len(entries) - len(clips))  # a 0.3 s pause between files
    assert clips[0].duration_s == pytest.approx(len(read_audio(clips[0])) / RATE)


def test_bench_stream_reports_latencies_amplification_and_both_wers(demo_server: Served, tmp_path: Path) -> None:
    doc = run_bench(tmp_path, "stream", "--server", demo_server.address, "--streams", "2",
                    "--files-per-stream", "1", "--gap-s", "1.0", "--stagger-s", "3")
    assert_context(doc, "stream")
    assert doc["server"]["started_here"] is False and doc["server"]["settings"] is None
    assert doc["options"]["streams"] == 2 and doc["options"]["realtime"] is True and doc["options"]["stagger_s"] == 3
    r = doc["results"]
    assert r["streams"] == 2 and r["admitted"] == 2 and r["codes"] == {"OK": 2}
    assert_percentiles(r["interim_ms"], upper_ms=5000)
    assert_percentiles(r["final_ms"], upper_ms=10000)
    assert 1.0 <= r["compute_amplification"] < 2.0
    assert 0 <= r["streamed_wer"] <= 1.5 and 0 <= r["offline_wer"] <= 1.5
    assert r["audio_s"] > 2 and r["wall_s"] >= r["audio_s"] / 2 * 0.9  # two streams at real-time pace
    second = read_manifest(demo_manifest())[1]  # the second stream's file, sent from 1.5 s on
    assert r["wall_s"] >= 1.5 + second.duration_s + 1.0


@pytest.mark.parametrize(("objective_ms", "held", "trials"), [(60_000, 2, [1, 2]), (1, 0, [1])])
def test_bench_stream_ramp_stops_at_the_latency_objective(
    demo_server: Served, tmp_path: Path, objective_ms: int, held: int, trials: list[int]
) -> None:
    doc = run_bench(tmp_path, "stream", "--server", demo_server.address, "--ramp", "--streams", "1",
                    "--max-streams", "2", "--files-per-stream", "1", "--gap-s", "1.0",
                    "--objective-ms", str(objective_ms))
    assert_context(doc, "stream-ramp")
    r = doc["results"]
    assert r["objective_ms"] == objective_ms and r["streams_held"] == held
    assert [t["streams"] for t in r["trials"]] == trials
    assert all(t["offline_wer"] is None and t["final_ms"] for t in r["trials"])


def test_bench_stream_compares_with_recognize_on_the_admitted_streams_files_only(
    demo_engine: NemoEngine, loop_thread: LoopThread, tmp_path: Path
) -> None:
    """One stream of two is admitted: the offline WER it is compared with is that stream's file's, not both's
    (one file's reference is wrong in every word, so the two files' WERs are far apart)."""
    right, other = read_manifest(demo_manifest())[:2]
    manifest = tmp_path / "two.jsonl"
    manifest.write_text("".join(json.dumps({"audio_filepath": str(e.audio), "duration": e.duration_s, "text": text})
                                + "\n" for e, text in ((right, right.text), (other, "zz " * 20))))
    served = start_server(loop_thread, demo_engine, max_streams=1)
    try:
        doc = run_bench(tmp_path, "stream", "--server", served.address, "--streams", "2", "--files-per-stream", "1",
                        "--manifest", str(manifest), "--fast")
    finally:
        served.stop()
    r = doc["results"]
    assert r["codes"] == {"OK": 1, "RESOURCE_EXHAUSTED": 1}
    assert r["offline_wer"] == pytest.approx(r["streamed_wer"], abs=0.15)


@pytest.mark.parametrize("pace", [[], ["--fast"]], ids=["real time", "fast"])
def test_bench_stream_beyond_capacity_refuses_the_excess_with_resource_exhausted(
    demo_server: Served, tmp_path: Path, pace: list[str]
) -> None:
    """Sent fast, a refused stream's audio is still being written when the refusal comes: an asyncio client
    then reports INTERNAL (grpc#36066) unless it waits for the server's headers first."""
    doc = run_bench(tmp_path, "stream", "--server", demo_server.address, "--capacity-multiple", "1.5",
                    "--files-per-stream", "1", "--gap-s", "1.0", *pace)
    r = doc["results"]
    admits = demo_server.settings.max_streams  # 8
    assert r["streams"] == 12 and r["admitted"] == admits
    assert r["codes"] == {"OK": admits, "RESOURCE_EXHAUSTED": 12 - admits}
    assert_percentiles(r["final_ms"], upper_ms=10000)
