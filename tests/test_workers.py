"""Several server processes on one set of ports (`PARAKEET_WORKERS`): the kernel spreads connections among them,
their metrics are served summed on the one metrics port, SIGTERM drains them all, and one that cannot start
ends the set with its one-line reason."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import riva.client
from wyoming.asr import Transcript

from parakeet_serve.errors import SettingsError
from parakeet_serve.settings import load_settings
from parakeet_serve.warmup import sample_path
from tests.conftest import running
from tests.riva.test_streaming import PACKAGE
from tests.telemetry.scrape import Scrape
from tests.test_cli import CLI, LineWatcher, free_port, wait_serving
from tests.wyoming.test_wyoming import Peer, pcm, texts, utterance


def test_two_workers_share_the_port_and_sum_their_metrics_and_sigterm_stops_both() -> None:
    port, metrics_port, wyoming_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--model", "demo", "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port), "--max-streams", "3",
         "--wyoming-host", "127.0.0.1", "--wyoming-port", str(wyoming_port)],
        stderr=subprocess.PIPE, text=True)
    try:
        logs = LineWatcher(process.stderr)
        address = f"127.0.0.1:{port}"
        for worker in (0, 1):
            logs.wait_for(f'"msg": "model ready", "worker": {worker}', timeout=240)
        wait_serving(address, process)
        wav = ((PACKAGE / "samples") / "quickstart.wav").read_bytes()
        texts = set()
        for _ in range(12):  # a connection each: a connection stays with the worker the kernel gave it
            # gRPC shares one connection among live channels to the same address (its global subchannel
            # pool), and a channel not yet collected kept every request on one worker
            auth = riva.client.Auth(uri=address, options=[("grpc.use_local_subchannel_pool", 1)])
            asr = riva.client.ASRService(auth)
            texts.add(asr.offline_recognize(wav, riva.client.RecognitionConfig(language_code="en-US"))
                      .results[0].alternatives[0].transcript)
            auth.channel.close()
        assert texts == {((PACKAGE / "samples") / "quickstart.txt").read_text().strip()}
        served = [json.loads(line).get("worker") for line in logs.lines if '"rpc": "Recognize"' in line]
        assert sorted(set(served)) == [0, 1], served
        heard = asyncio.run(wyoming_utterances(wyoming_port, 12))  # the Wyoming port is shared too
        assert set(heard) == texts
        served = [json.loads(line).get("worker") for line in logs.lines if '"rpc": "Wyoming"' in line]
        assert sorted(set(served)) == [0, 1], served
        scrape = Scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert scrape.value("parakeet_requests_total", rpc="Recognize", code="OK") == 12
        assert scrape.value("parakeet_requests_total", rpc="Wyoming", code="OK") == 12
        assert scrape.value("parakeet_max_streams") == 6 and scrape.value("parakeet_ready") == 1
        started = json.loads(next(line for line in logs.lines if '"workers started"' in line))["workers"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0
        assert all(not Path(f"/proc/{pid}").exists() for pid in started)
        assert sum('"msg": "stopped"' in line for line in logs.lines) == 2
    finally:
        process.kill()


def test_workers_drain_and_end_when_their_supervisor_is_killed_outright(tiny_models: dict[str, Path]) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--model", str(tiny_models["tdt"]), "--workers", "2", "--host", "127.0.0.1",
         "--port", str(port), "--metrics-host", "127.0.0.1", "--metrics-port", str(free_port())],
        stderr=subprocess.PIPE, text=True)
    started: list[int] = []
    try:
        logs = LineWatcher(process.stderr)  # the workers keep writing to it after the supervisor is gone
        for worker in (0, 1):
            logs.wait_for(f'"msg": "model ready", "worker": {worker}', timeout=240)
        started += json.loads(next(line for line in logs.lines if '"workers started"' in line))["workers"]
        process.kill()  # SIGKILL: the supervisor runs no clean-up
        process.wait()
        logs.wait_for('"msg": "stopped"', timeout=60, count=2)  # each drained, none was killed
        deadline = time.monotonic() + 60
        while any(map(running, started)):
            assert time.monotonic() < deadline, [pid for pid in started if running(pid)]
            time.sleep(0.1)
    finally:
        process.kill()
        for pid in filter(running, started):
            os.kill(pid, signal.SIGKILL)


def test_a_worker_that_cannot_start_ends_the_set_with_its_one_line(tmp_path: Path) -> None:
    started = subprocess.run(
        [*CLI, "serve", "--model", str(tmp_path / "missing.nemo"), "--workers", "2", "--host", "127.0.0.1",
         "--port", str(free_port()), "--metrics-host", "127.0.0.1", "--metrics-port", str(free_port())],
        capture_output=True, text=True, timeout=240)
    assert started.returncode == 2
    assert "Traceback" not in started.stderr, started.stderr[-2000:]
    reasons = [line for line in started.stderr.splitlines() if line.startswith("parakeet-serve: ")]
    assert reasons and "missing.nemo" in reasons[0], started.stderr[-2000:]


def test_workers_need_fixed_ports() -> None:
    with pytest.raises(SettingsError, match="PARAKEET_WORKERS > 1 needs fixed ports"):
        load_settings(workers=2, port=0)


async def wyoming_utterances(port: int, connections: int) -> list[str]:
    """The bundled sample as one utterance on each of `connections` Wyoming connections; their transcripts."""
    heard = []
    for _ in range(connections):
        async with Peer(port) as peer:
            await peer.send(*utterance(pcm(sample_path())))
            heard += texts(await peer.until("transcript"), Transcript)
    return heard
