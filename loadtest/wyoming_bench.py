"""Wyoming as Home Assistant uses it: parakeet-serve beside the design of the community Parakeet wrappers (one
process per model, each request's audio gathered, then the model's own `transcribe()` on it, one request at a
time), on the same demo model and the same cores.

    python -m loadtest.wyoming_bench [--set demo-eval-everyday.jsonl] [--connections 1 4 16] \
        [--json loadtest/results/cpu-2core-demo-wyoming.json]

Each server runs in a process of its own. Two drivers, from this process:
- `wyoming-bench stt` (a third-party benchmark from PyPI) on a corpus of the set's recordings as WAV: its
  per-request figures (total time, time to the first partial text, RTF, WER), one request at a time;
- N connections at once, each sending the set's utterances back to back as fast as it is answered (as N
  voice satellites speaking together would, without pacing): utterances a second, p50/p95 from audio-stop to
  the transcript, WER.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient

from parakeet_serve.evaluation import ManifestEntry, corpus_wer, read_manifest
from parakeet_serve.net import free_port

EVAL = Path(__file__).resolve().parent.parent / "service" / "parakeet_serve" / "eval"
RATE = 16000
CHUNK_BYTES = 2048  # 1024 samples, as Home Assistant and wyoming-bench send


def one_at_a_time(port: int, model_id: str) -> None:
    """The wrappers' design: a Wyoming handler that gathers an utterance, then runs NeMo's `transcribe()` on it
    while holding the one model (a lock: one request at a time)."""
    from nemo.collections.asr.models import ASRModel
    from wyoming.event import Event
    from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info
    from wyoming.server import AsyncEventHandler, AsyncServer

    from parakeet_serve.engine.loader import resolve_model_file

    model = ASRModel.restore_from(str(resolve_model_file(model_id, None, True)), map_location="cpu").eval()
    lock = asyncio.Lock()
    source = Attribution(name="community", url="")
    info = Info(asr=[AsrProgram(name="one-at-a-time", attribution=source, installed=True, description=None,
                                version=None, models=[AsrModel(name=model_id, attribution=source, installed=True,
                                                               description=None, version=None, languages=["en"])])])

    class Handler(AsyncEventHandler):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.audio = bytearray()

        async def handle_event(self, event: Event) -> bool:
            if Describe.is_type(event.type):
                await self.write_event(info.event())
            elif AudioStart.is_type(event.type):
                self.audio = bytearray()
            elif AudioChunk.is_type(event.type):
                self.audio += AudioChunk.from_event(event).audio
            elif AudioStop.is_type(event.type):
                samples = np.frombuffer(bytes(self.audio), "<i2").astype(np.float32) / 32768
                async with lock:
                    out = await asyncio.to_thread(model.transcribe, [samples], batch_size=1, verbose=False)
                await self.write_event(Transcript(text=getattr(out[0], "text", out[0])).event())
            return True

    asyncio.run(AsyncServer.from_uri(f"tcp://127.0.0.1:{port}").run(Handler))


def corpus(entries: Sequence[ManifestEntry], folder: Path) -> None:
    """wyoming-bench's corpus: each recording as 16 kHz 16-bit WAV beside its transcript."""
    for i, entry in enumerate(entries):
        sf.write(folder / f"{i:03d}.wav", read(entry), RATE, subtype="PCM_16")
        (folder / f"{i:03d}.txt").write_text(entry.text + "\n")


def read(entry: ManifestEntry) -> np.ndarray:
    audio, rate = sf.read(entry.audio, dtype="float32")
    assert rate == RATE, entry.audio
    return audio


def wyoming_bench(port: int, folder: Path, *options: str) -> dict[str, Any]:
    """wyoming-bench's summary of the server: its figures, as it prints them."""
    command = [str(Path(sys.executable).with_name("wyoming-bench")), "stt", f"127.0.0.1:{port}", "--corpus",
               str(folder), "--rounds", "1", "--trailing-silence", "0", *options]
    out = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=True).stdout
    return {"command": " ".join(command[1:]), "output": out}


async def load(port: int, clips: Sequence[bytes], connections: int, references: Sequence[str]) -> dict[str, Any]:
    """`connections` clients each sending every clip once, back to back."""
    latencies: list[float] = []
    heard: dict[int, str] = {}

    async def client(first: int) -> None:
        async with AsyncTcpClient("127.0.0.1", port) as peer:
            for n in range(len(clips)):
                i = (first + n) % len(clips)  # each client starts at a different utterance
                await peer.write_event(Transcribe(language="en").event())
                await peer.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
                for start in range(0, len(clips[i]), CHUNK_BYTES):
                    chunk = AudioChunk(rate=RATE, width=2, channels=1, audio=clips[i][start:start + CHUNK_BYTES])
                    await peer.write_event(chunk.event())
                await peer.write_event(AudioStop().event())
                stopped = time.perf_counter()
                while not Transcript.is_type((event := await peer.read_event()).type):
                    assert event.type != "error", event.data
                latencies.append(time.perf_counter() - stopped)
                heard.setdefault(i, Transcript.from_event(event).text)

    began = time.perf_counter()
    await asyncio.gather(*(client(c * len(clips) // connections) for c in range(connections)))
    wall = time.perf_counter() - began
    audio_s = connections * sum(len(c) for c in clips) / 2 / RATE
    return {"connections": connections, "utterances": len(latencies), "wall_s": round(wall, 2),
            "utterances_per_s": round(len(latencies) / wall, 2), "rtfx": round(audio_s / wall, 1),
            "latency_p50_s": round(float(np.percentile(latencies, 50)), 3),
            "latency_p95_s": round(float(np.percentile(latencies, 95)), 3),
            "wer": round(corpus_wer(references, [heard[i] for i in range(len(clips))]), 4)}


@contextlib.contextmanager
def running(command: Sequence[str], port: int, env: dict[str, str]) -> Iterator[None]:
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0 and ready(port):
                    break
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        yield
    finally:
        process.terminate()
        process.wait(60)


def ready(port: int) -> bool:
    """The server answers `describe` with its info (parakeet-serve says `not_ready` while it loads)."""
    async def describe() -> bool:
        from wyoming.info import Describe

        async with AsyncTcpClient("127.0.0.1", port) as peer:
            await peer.write_event(Describe().event())
            event = await asyncio.wait_for(peer.read_event(), 30)
            return event is not None and event.type == "info"

    try:
        return asyncio.run(describe())
    except (OSError, TimeoutError):
        return False


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="demo-eval-everyday.jsonl", help="evaluation set in the package's eval/")
    parser.add_argument("--limit", type=int, default=0, help="first N utterances only (0: all)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--live", type=int, default=20, help="utterances wyoming-bench also streams at the pace "
                                                              "of speech (a satellite's microphone), 0: none")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--serve-one-at-a-time", type=int, metavar="PORT", help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.serve_one_at_a_time:
        return one_at_a_time(a.serve_one_at_a_time, a.model)
    entries = read_manifest(EVAL / a.set)[: a.limit or None]
    clips = [(np.clip(read(e), -1, 1) * 32767).astype("<i2").tobytes() for e in entries]
    references = [e.text for e in entries]
    port = free_port()
    quiet = {"PARAKEET_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
    servers = {
        "parakeet-serve": [sys.executable, "-m", "parakeet_serve", "serve", "--model-id", a.model,
                           "--port", str(free_port()), "--metrics-port", str(free_port()),
                           "--wyoming-host", "127.0.0.1", "--wyoming-port", str(port)],
        "one-at-a-time": [sys.executable, "-m", "loadtest.wyoming_bench", "--model", a.model,
                          "--serve-one-at-a-time", str(port)],
    }
    results: dict[str, Any] = {"set": a.set, "utterances": len(entries), "cores": os.cpu_count(), "servers": {}}
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as live:
        corpus(entries, Path(folder))
        corpus(entries[: a.live], Path(live))
        for name, command in servers.items():
            with running(command, port, quiet):
                figures: dict[str, Any] = {"wyoming_bench": wyoming_bench(port, Path(folder), "--mode", "both")}
                if a.live and name == "parakeet-serve":  # the other has no streaming to show
                    pace = str(1024 / RATE)  # each 1024-sample chunk when it has been spoken
                    figures["wyoming_bench_live"] = wyoming_bench(port, Path(live), "--mode", "streaming",
                                                                  "--chunk-delay", pace)
                figures["concurrent"] = [asyncio.run(load(port, clips, n, references)) for n in a.connections]
            results["servers"][name] = figures
            for run in ("wyoming_bench", "wyoming_bench_live"):
                if run in figures:
                    print(f"== {name}: {figures[run]['command']}\n{figures[run]['output']}")
            for row in figures["concurrent"]:
                print(json.dumps(row))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
