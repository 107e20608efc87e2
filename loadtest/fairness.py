"""Fairness under one greedy client: real-time streams' end of speech -> final latency, alone and while one
realtime WebSocket client appends minutes of audio in a single event, in one run against one server (the
demo model, started here with its HTTP API).

    python -m loadtest.fairness --streams 32 --append-s 120 [--json F]

The streams are `parakeet-serve bench stream`'s (real-time pace, starts spread over a second); the greedy
client starts two seconds after them and sends the demo evaluation set's speech as 24 kHz PCM. Its own
figure is the time from its append to the `input_audio_buffer.cleared` that answers a `clear` sent just after
it (events are handled in order, so that is when its audio was all transcribed), and the WER of its items.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import soxr
import websockets

from parakeet_serve.bench.clips import RATE, read_audio
from parakeet_serve.bench.stream import StreamBenchOptions, StreamReport, bench_stream
from parakeet_serve.cli import server_process
from parakeet_serve.evaluation import ManifestEntry, corpus_wer, demo_manifest, read_manifest
from parakeet_serve.net import free_port

GREEDY_DELAY_S = 2.0


@dataclass(frozen=True)
class Greedy:
    audio_s: float
    transcribed_in_s: float
    items: int
    wer: float


def greedy_audio(entries: list[ManifestEntry], seconds: float) -> tuple[bytes, list[str]]:
    """Evaluation files with a second of silence after each, at 24 kHz, until `seconds` are filled."""
    parts, texts, total, k = [], [], 0, 0
    gap = np.zeros(RATE, np.float32)
    while total < seconds * RATE:
        entry = entries[k % len(entries)]
        parts += [read_audio(entry), gap]
        texts.append(entry.text)
        total += len(parts[-2]) + len(gap)
        k += 1
    audio = soxr.resample(np.concatenate(parts), RATE, 24000)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(), texts


async def greedy_client(http_port: int, pcm: bytes, texts: list[str]) -> Greedy:
    async with websockets.connect(f"ws://127.0.0.1:{http_port}/v1/realtime?intent=transcription",
                                  max_size=None, ping_timeout=None) as ws:
        await ws.recv()  # session.created
        started = time.perf_counter()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        transcripts = []
        while (event := json.loads(await ws.recv()))["type"] != "input_audio_buffer.cleared":
            if event["type"] == "error":
                raise RuntimeError(event["error"]["message"])
            if event["type"] == "conversation.item.input_audio_transcription.completed":
                transcripts.append(event["transcript"])
        elapsed = time.perf_counter() - started
    return Greedy(len(pcm) / 2 / 24000, elapsed, len(transcripts),
                  corpus_wer([" ".join(texts)], [" ".join(transcripts)]))


async def with_greedy(target: str, http_port: int, entries: list[ManifestEntry], options: StreamBenchOptions,
                      pcm: bytes, texts: list[str]) -> tuple[StreamReport, Greedy]:
    async def delayed() -> Greedy:
        await asyncio.sleep(GREEDY_DELAY_S)
        return await greedy_client(http_port, pcm, texts)

    return await asyncio.gather(bench_stream(target, entries, options), delayed())


def summary(report: StreamReport) -> dict[str, Any]:
    return {"final_ms": report.final_ms, "interim_ms": report.interim_ms, "codes": report.codes,
            "streamed_wer": round(report.streamed_wer, 4), "wall_s": round(report.wall_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--files-per-stream", type=int, default=8)
    parser.add_argument("--append-s", type=float, default=120.0)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    entries = read_manifest(demo_manifest())
    options = StreamBenchOptions(streams=args.streams, files_per_stream=args.files_per_stream, offline_wer=False)
    pcm, texts = greedy_audio(entries, args.append_s)
    http_port = free_port()
    os.environ.update(PARAKEET_HTTP_PORT=str(http_port), PARAKEET_HTTP_HOST="127.0.0.1",
                      PARAKEET_MAX_STREAMS=str(args.streams + 8))
    with server_process("demo") as target:
        alone = asyncio.run(bench_stream(target, entries, options))
        shared, greedy = asyncio.run(with_greedy(target, http_port, entries, options, pcm, texts))
    ratio = shared.final_ms["p95"] / alone.final_ms["p95"]
    figures = {"streams": args.streams, "alone": summary(alone), "with_greedy_client": summary(shared),
               "greedy_client": asdict(greedy), "final_p95_ratio": round(ratio, 2)}
    print(f"{args.streams} real-time streams, end of speech -> final ms p50/p95/p99:")
    for name, report in (("alone", alone), ("with the greedy client", shared)):
        print(f"  {name:24} {report.final_ms['p50']:.0f} / {report.final_ms['p95']:.0f} / "
              f"{report.final_ms['p99']:.0f}   (codes {report.codes}, {report.wall_s:.0f} s)")
    print(f"  p95 ratio {ratio:.2f} (target <= 1.5)")
    print(f"greedy client: {greedy.audio_s:.0f} s in one append, transcribed in {greedy.transcribed_in_s:.1f} s, "
          f"{greedy.items} items, WER {greedy.wer:.2%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
