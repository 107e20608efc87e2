"""The server's own ceiling: how many `Recognize` requests a second, and how many real-time streams, its front
end, audio decoding and scheduler sustain when the model answers at once (a null engine with the demo model's
shapes). A GPU can only be as fast as this lets it be: 5,000x real time on ~3 s files is ~1,700 requests a
second.

    python -m loadtest.null_engine [--concurrency 256] [--streams 64] [--json-prefix results/cpu-2core-null]

The server runs in a process of its own as `parakeet-serve serve` would (with `--workers N`, N processes behind
one port), and `parakeet-serve bench` drives it from another process (on the same cores; over 4 connections a
worker, so the kernel spreads them): offline at the given concurrency (files, then the same audio as raw PCM),
then a ramp of real-time streams from `--streams`, doubling until p95 end of speech -> final passes 1050 ms,
then bisecting. Each run also reports the server's CPU time (all its processes), per request offline: what a
request costs the server, whatever the bench's own share of the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from parakeet_serve.app import serve_until_stopped
from parakeet_serve.engine import load_engine
from parakeet_serve.engine.streaming import StepOutput, StreamInput, StreamState
from parakeet_serve.engine.types import Hypothesis, TokenSpan, Transcript
from parakeet_serve.logs import configure_logging
from parakeet_serve.net import free_port
from parakeet_serve.settings import Settings, load_settings
from parakeet_serve.workers import run_workers

SILENT = Transcript((Hypothesis("", 1.0),))
LOUD = 0.02  # a step whose loudest sample passes this has speech in it


class NullStreamer:
    """The demo model's stream geometry, answering each step at once: a token for a step with sound in it, and
    the utterance's end at the first silent step after one (so finals come, and their latency is the server's)."""

    def __init__(self, real: Any, sample_rate: int, frame_shift_s: float) -> None:
        self._real, self._rate, self._frame_s = real, sample_rate, frame_shift_s
        self._speaking: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def open(self, boost: Any = None, endpoint_s: float = 0.0) -> StreamState:
        return StreamState(endpoint_s=endpoint_s)

    def close(self, state: StreamState) -> None:
        self._speaking.discard(id(state))

    def step(self, inputs: Sequence[StreamInput]) -> list[StepOutput]:
        return [self._step(item) for item in inputs]

    def _step(self, item: StreamInput) -> StepOutput:
        state = item.state
        state.audio_offset += len(item.audio)
        state.frames = int(state.audio_offset / self._rate / self._frame_s)
        tokens, endpoints, cuts = (), (), ()
        if len(item.audio) and np.abs(item.audio).max() > LOUD:
            self._speaking.add(id(state))
            tokens = (TokenSpan(1, "▁a", state.frames, state.frames + 1, 1.0),)
        elif id(state) in self._speaking:
            self._speaking.discard(id(state))
            endpoints, cuts = (0,), (state.audio_offset,)
        return StepOutput(tokens, state.frames, state.audio_offset / self._rate, 0.0, endpoints, cuts)


class NullEngine:
    """The demo engine's interface and facts, answering every batch at once with silence."""

    booster = None

    def __init__(self, real: Any) -> None:
        self._real = real
        self.info, self.sample_rate, self.frame_shift_s = real.info, real.sample_rate, real.frame_shift_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def recognise(self, audios: Sequence[np.ndarray], alternatives: Any = None, boosts: Any = None) -> list[Transcript]:
        return [SILENT] * len(audios)

    transcribe = recognise

    def warmup(self, shape: object = None) -> None:
        pass

    def streamer(self, left_context_s: float) -> NullStreamer:
        return NullStreamer(self._real.streamer(left_context_s), self.sample_rate, self.frame_shift_s)


async def serve_null(settings: Settings) -> None:
    """A server on the null engine, as `parakeet-serve serve` runs (a worker process's `serve`)."""
    await serve_until_stopped(settings, NullEngine(load_engine("demo")))


def serve_main(workers: int, port: int, metrics_port: int) -> None:
    """The server process: one, or `workers` behind one port."""
    settings = load_settings(model_id="demo", host="127.0.0.1", port=port, metrics_host="127.0.0.1",
                             metrics_port=metrics_port, warmup=False, max_streams=4096, microbatch_max_batch=128,
                             stream_mode="cache_aware", workers=workers, log_level="WARNING")
    configure_logging(settings.log_level)
    if workers > 1:
        raise SystemExit(run_workers(settings, serve_null))
    asyncio.run(serve_null(settings))


@contextlib.contextmanager
def null_server(workers: int) -> Iterator[tuple[str, psutil.Process]]:
    """The null server in a process of its own (its CPU time then counts apart from the bench's): its address,
    and the process (its workers are its children)."""
    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-m", "loadtest.null_engine", "--serve-workers", str(workers),
                                "--port", str(port), "--metrics-port", str(metrics_port)])
    try:
        _wait_ready(f"http://127.0.0.1:{metrics_port}/metrics", process)
        yield f"127.0.0.1:{port}", psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(60)


def cpu_seconds(process: psutil.Process) -> float:
    """User and system CPU time of the process and its children so far."""
    times = [p.cpu_times() for p in [process, *process.children(recursive=True)]]
    return sum(t.user + t.system for t in times)


def _wait_ready(metrics_url: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
    """Until every worker is ready (`parakeet_ready` is the lowest over them)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the null server exited with code {process.returncode}")
        with contextlib.suppress(OSError):
            if "parakeet_ready 1.0" in urllib.request.urlopen(metrics_url, timeout=2).read().decode():
                return
        time.sleep(0.5)
    raise SystemExit("the null server was not ready in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="server processes behind the port")
    parser.add_argument("--channels", type=int, default=0, help="the bench's connections (default: 4 per worker)")
    parser.add_argument("--repeat", type=int, default=4, help="times the demo set is sent offline")
    parser.add_argument("--only", choices=["offline", "offline-pcm", "stream"], action="append",
                        help="run only these (repeatable)")
    parser.add_argument("--json-prefix", help="write the bench JSONs as PREFIX-offline.json, PREFIX-stream.json")
    parser.add_argument("--serve-workers", type=int, help=argparse.SUPPRESS)  # the server process itself
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--metrics-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_workers:
        serve_main(args.serve_workers, args.port, args.metrics_port)
        return
    with null_server(args.workers) as (target, server):
        channels = args.channels or 4 * args.workers
        bench = [sys.executable, "-m", "parakeet_serve", "bench"]
        offline = ["offline", "--server", target, "--concurrency", str(args.concurrency), "--repeat",
                   str(args.repeat), "--no-in-process", "--rounds", "1", "--channels", str(channels)]
        runs = {
            "offline": offline,
            "offline-pcm": [*offline, "--pcm"],  # the files sent decoded: no container parsing on the server
            "stream": ["stream", "--server", target, "--ramp", "--streams", str(args.streams), "--files-per-stream",
                       "2", "--max-streams", "2048"],
        }
        for name, command in runs.items():
            if args.only and name not in args.only:
                continue
            out = Path(f"{args.json_prefix}-{name}.json") if args.json_prefix else None
            before = cpu_seconds(server)
            subprocess.run([*bench, *command, *(["--json", str(out)] if out else [])], check=True)
            _report_cpu(name, cpu_seconds(server) - before, args.workers, out)


def _report_cpu(name: str, server_cpu_s: float, workers: int, out: Path | None) -> None:
    """The server's CPU time over the run, per request where the run counts requests (added to its JSON)."""
    line = {"server_cpu_s": round(server_cpu_s, 2), "workers": workers}
    if out is not None:
        run = json.loads(out.read_text())
        requests = run.get("results", {}).get("requests")
        if requests:  # the warm-up requests are in the CPU time too: a slight overestimate
            line["server_cpu_ms_per_request"] = round(1000 * server_cpu_s / requests, 3)
        out.write_text(json.dumps({**run, "server_process": line}, indent=2))
    print(f"{name}: server {json.dumps(line)}")


if __name__ == "__main__":
    main()
