"""The server's own ceiling: how many `Recognize` requests a second, and how many real-time streams, its front
end, audio decoding and scheduler sustain when the model answers at once (a null engine with the demo model's
shapes). A GPU can only be as fast as this lets it be: 5,000x real time on ~3 s files is ~1,700 requests a
second.

    python -m loadtest.null_engine [--concurrency 256] [--streams 64] [--json-prefix results/cpu-2core-null]

The server runs in this process (as `parakeet-serve serve` would, on the same event loop and inference thread),
and `parakeet-serve bench` drives it from another process (on the same cores): offline at the given concurrency
(files, then the same audio as raw PCM), then a ramp of real-time streams from `--streams`, doubling until p95
end of speech -> final passes 1050 ms, then bisecting.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from parakeet_serve.app import Application
from parakeet_serve.engine import load_engine
from parakeet_serve.engine.streaming import StreamState
from parakeet_serve.engine.types import Hypothesis, StepOutput, StreamInput, Transcript
from parakeet_serve.engine.words import TokenSpan
from parakeet_serve.settings import load_settings

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

    def open(self, boost: Any = None) -> StreamState:
        return StreamState()

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


def serve_in_background(settings: Any, engine: NullEngine) -> tuple[int, threading.Event]:
    """Start the server on its own event loop thread; returns its port and an event that stops it."""
    ready, stop, port = threading.Event(), threading.Event(), []

    async def run() -> None:
        app = Application(settings, engine=engine)
        await app.start()
        await app.load()
        port.append(app.port)
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        await app.drain()

    threading.Thread(target=asyncio.run, args=(run(),), daemon=True).start()
    ready.wait(120)
    return port[0], stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--json-prefix", help="write the bench JSONs as PREFIX-offline.json, PREFIX-stream.json")
    args = parser.parse_args()
    settings = load_settings(model_id="demo", host="127.0.0.1", port=0, metrics_port=0, warmup=False,
                             max_streams=4096, microbatch_max_batch=128, stream_mode="cache_aware")
    port, stop = serve_in_background(settings, NullEngine(load_engine("demo")))
    target = f"127.0.0.1:{port}"
    bench = [sys.executable, "-m", "parakeet_serve", "bench"]
    offline = ["offline", "--server", target, "--concurrency", str(args.concurrency), "--repeat", "4",
               "--no-in-process", "--rounds", "1"]
    runs = {
        "offline": offline,
        "offline-pcm": [*offline, "--pcm"],  # the files sent decoded: no container parsing on the server
        "stream": ["stream", "--server", target, "--ramp", "--streams", str(args.streams), "--files-per-stream", "2",
                   "--max-streams", "2048"],
    }
    try:
        for name, command in runs.items():
            out = ["--json", f"{args.json_prefix}-{name}.json"] if args.json_prefix else []
            subprocess.run([*bench, *command, *out], check=True)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
