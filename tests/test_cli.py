"""The console script as users run it: serve, SIGTERM drain, transcribe, and start-up errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import riva.client
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parakeet_serve.net import free_port
from tests.conftest import pcm16, speechlike

CLI = [sys.executable, "-m", "parakeet_serve"]
# The CLI with Ctrl-C as a terminal delivers it. A suite started as a background job of a shell without job
# control inherits SIGINT ignored, and Python then installs no handler for it: the child would never see it.
AS_IN_A_TERMINAL = [sys.executable, "-c", "import runpy, signal; "
                    "signal.signal(signal.SIGINT, signal.default_int_handler); "
                    "runpy.run_module('parakeet_serve', run_name='__main__')"]


def wait_serving(address: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited during start-up"
        try:
            with grpc.insecure_channel(address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become SERVING")


class LineWatcher:
    """Collects a process's stderr lines and lets a test wait for one."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 60, count: int = 1) -> None:
        """Until `count` lines have said `text`."""
        with self._cond:
            assert self._cond.wait_for(lambda: sum(text in line for line in self.lines) >= count, timeout), text


def test_sigterm_drains_in_flight_requests_then_exits(tiny_models: dict[str, Path]) -> None:
    port = free_port()
    env = {**os.environ, "PARAKEET_SHUTDOWN_GRACE_S": "60"}
    process = subprocess.Popen(
        [*CLI, "serve", "--model", str(tiny_models["tdt"]), "--port", str(port), "--host", "127.0.0.1",
         "--log-level", "DEBUG", "--max-audio-seconds", "1200"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        logs = LineWatcher(process.stderr)
        address = f"127.0.0.1:{port}"
        wait_serving(address, process)
        asr = riva.client.ASRService(riva.client.Auth(uri=address))
        config = riva.client.RecognitionConfig(
            encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000, language_code="en-US"
        )
        audio = pcm16(speechlike(600.0))  # ten minutes: the request is still running when SIGTERM arrives
        pending = asr.offline_recognize(audio, config, future=True)
        logs.wait_for('"request received"')
        process.send_signal(signal.SIGTERM)
        response = pending.result(timeout=120)
        assert response.results[0].audio_processed == 600.0
        assert process.wait(timeout=60) == 0
        logs.wait_for('"draining"')
        logs.wait_for('"stopped"')
    finally:
        process.kill()


def test_transcribe_command_prints_transcript_and_word_times(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    import soundfile as sf

    port = free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--model", str(tiny_models["hybrid_tdt_ctc"]), "--port", str(port), "--host", "127.0.0.1"],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_serving(f"127.0.0.1:{port}", process)
        wav = tmp_path / "a.wav"
        sf.write(wav, speechlike(2.0)[0], 16000)
        out = subprocess.run(
            [*CLI, "transcribe", str(wav), "--server", f"127.0.0.1:{port}", "--words"],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout.splitlines()
        assert out[1].split() == ["start_s", "end_s", "conf", "word"]
        word_lines = [line for line in out[2:] if line.startswith("  ")]
        assert len(word_lines) == len(out[0].split())
        raw = tmp_path / "a.raw"  # the same samples without their header: given their rate, the same words
        raw.write_bytes(sf.read(wav, dtype="int16")[0].astype("<i2").tobytes())
        headerless = subprocess.run(
            [*CLI, "transcribe", str(raw), "--rate", "16000", "--server", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
        assert headerless[0] == out[0]
        no_rate = subprocess.run([*CLI, "transcribe", str(raw), "--encoding", "pcm", "--server", f"127.0.0.1:{port}"],
                                 capture_output=True, text=True, timeout=60)
        assert no_rate.returncode == 1 and "needs its sample rate (--rate)" in no_rate.stderr
        for line in word_lines:
            start, end, confidence, _word = line.split(maxsplit=3)
            assert 0 <= float(start) <= float(end) <= 2.1 and 0 <= float(confidence) <= 1
        missing = subprocess.run(
            [*CLI, "transcribe", str(tmp_path / "none.wav"), "--server", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60,
        )
        assert missing.returncode != 0 and "no such file" in missing.stderr
        empty = tmp_path / "empty.wav"
        empty.write_bytes(b"")
        refused = subprocess.run(
            [*CLI, "transcribe", str(empty), "--server", f"127.0.0.1:{port}"], capture_output=True, text=True,
            timeout=60,
        )
        assert refused.returncode == 1 and "INVALID_ARGUMENT: The audio is empty." in refused.stderr
    finally:
        process.terminate()
        process.wait(60)


def test_bad_settings_and_missing_model_end_start_up_with_one_line(tmp_path: Path) -> None:
    bad = subprocess.run([*CLI, "serve", "--microbatch-max-batch", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("parakeet-serve: invalid settings: PARAKEET_MICROBATCH_MAX_BATCH='0'")
    offline = subprocess.run(
        [*CLI, "serve", "--model", "nvidia/parakeet-tdt-0.6b-v2", "--model-cache-dir", str(tmp_path),
         "--hub-offline", "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert offline.returncode == 2
    last = offline.stderr.strip().splitlines()[-1]
    assert last.startswith("parakeet-serve: Model nvidia/parakeet-tdt-0.6b-v2 is not in the cache")
    assert str(tmp_path) in last and "fix:" in last


@pytest.mark.parametrize(("flag", "setting", "what"), [
    ("--port", "PARAKEET_PORT", "gRPC"),
    ("--metrics-port", "PARAKEET_METRICS_PORT", "metrics"),
    ("--http-port", "PARAKEET_HTTP_PORT", "the HTTP API"),
])
def test_a_taken_port_ends_start_up_with_one_sentence_naming_it(flag: str, setting: str, what: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--port": "0", "--metrics-port": "0", "--http-port": "0", flag: str(port)}
        hosts = ["--host", "127.0.0.1", "--metrics-host", "127.0.0.1", "--http-host", "127.0.0.1"]
        started = subprocess.run([*CLI, "serve", "--model", "demo", *hosts, *(x for kv in ports.items() for x in kv)],
                                 capture_output=True, text=True, timeout=120)
    assert started.returncode == 2, started.stderr[-2000:]
    assert "Traceback" not in started.stderr and "never awaited" not in started.stderr, started.stderr[-2000:]
    last = started.stderr.strip().splitlines()[-1]
    assert last.startswith(f"parakeet-serve: Cannot listen on 127.0.0.1:{port} for {what} ({setting}):"), last


def test_ctrl_c_during_transcribe_exits_quietly_with_130(tmp_path: Path) -> None:
    audio = tmp_path / "speech.raw"
    audio.write_bytes(pcm16(speechlike(1.0)))
    with socket.socket() as silent:  # a server that accepts and never answers: the client waits
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        process = subprocess.Popen([*AS_IN_A_TERMINAL, "transcribe", str(audio), "--server",
                                    f"127.0.0.1:{silent.getsockname()[1]}"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-2000:]
