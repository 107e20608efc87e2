"""Peak memory under hostile input.

Decompression bombs: FLAC silence at 8 channels and 192 kHz (a few KB a minute), decoded to 16 kHz mono as a
request's audio is. Each size runs in a fresh process; the figure is the peak resident memory over what the
process held after its imports.

Against a server (the demo model with its HTTP API, a fresh process per case): a 200 MiB chunked upload with no
Content-Length, and minutes of audio in one realtime append. The figure is the server's peak resident memory
(VmHWM) over its peak after a warm-up transcription and a warm-up append.

    python -m loadtest.hostile_memory --seconds 60 300 --upload-mib 200 --append-s 120
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import resource
import select
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import websockets


def bomb(seconds: int, rate: int = 192000, channels: int = 8) -> bytes:
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, channels, format="FLAC", subtype="PCM_16") as f:
        silence = np.zeros((rate, channels), np.float32)
        for _ in range(seconds):
            f.write(silence)
    return buffer.getvalue()


def measure(seconds: int) -> dict[str, float]:
    """In this process: decode the bomb once, after the imports and the file are in memory."""
    from parakeet_serve.audio import AudioFormat, decode_audio

    data = bomb(seconds)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    audio = decode_audio(data, AudioFormat(), target_rate=16000, max_seconds=600)
    mono = audio.mono()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "file_kb": round(len(data) / 1024, 1), "output_mb": round(mono.nbytes / 2**20, 1),
            "peak_over_baseline_mb": round((peak - before) / 1024, 1)}


def chunked_upload(http_port: int, mib: int) -> str:
    """Send a multipart body of `mib` MiB in 1 MiB chunks with no Content-Length, until the server answers."""
    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data)

    with socket.create_connection(("127.0.0.1", http_port), timeout=60) as sock:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
        sock.sendall(chunk(b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'))
        for _ in range(mib):
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk(b"\x01" * 2**20))
            except OSError:
                break
        else:
            sock.sendall(chunk(b"\r\n--x--\r\n") + b"0\r\n\r\n")
        return sock.recv(65536).split(b"\r\n", 1)[0].decode(errors="replace")


async def realtime_append(http_port: int, seconds: float) -> str:
    """One append of `seconds` of speech-like noise at 24 kHz, then a clear: answered once it is all handled."""
    pcm = (np.random.default_rng(0).standard_normal(int(seconds * 24000)) * 3000).astype("<i2").tobytes()
    async with websockets.connect(f"ws://127.0.0.1:{http_port}/v1/realtime?intent=transcription",
                                  max_size=None, ping_timeout=None) as ws:
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        while (event := json.loads(await ws.recv()))["type"] not in ("input_audio_buffer.cleared", "error"):
            pass
        return event["type"]


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


def server_pid() -> int:
    """The `parakeet-serve serve` child of this process."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = stat.read_text().rsplit(")", 1)[1].split()
        if fields[1] == me:
            return int(stat.parent.name)
    raise RuntimeError("no server process")


def against_server(name: str, hostile: Callable[[int], str]) -> dict[str, object]:
    from parakeet_serve.cli import server_process
    from parakeet_serve.net import free_port
    from parakeet_serve.warmup import sample_path

    http_port = free_port()
    os.environ.update(PARAKEET_HTTP_PORT=str(http_port), PARAKEET_HTTP_HOST="127.0.0.1")
    with server_process("demo"):
        pid = server_pid()
        httpx.post(f"http://127.0.0.1:{http_port}/v1/audio/transcriptions", data={"model": "demo"},
                   files={"file": sample_path().read_bytes()}, timeout=120).raise_for_status()
        asyncio.run(realtime_append(http_port, 5.0))
        baseline = peak_rss_mb(pid)
        answer = hostile(http_port)
        peak = peak_rss_mb(pid)
    return {"case": name, "answer": answer, "peak_over_baseline_mb": round(peak - baseline, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, nargs="*", default=[60, 300])
    parser.add_argument("--upload-mib", type=int, help="also a chunked upload of this many MiB against a server")
    parser.add_argument("--append-s", type=float, help="also one realtime append of this many seconds")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one)))
        return
    for seconds in args.seconds:
        child = subprocess.run([sys.executable, "-m", "loadtest.hostile_memory", "--one", str(seconds)],
                               capture_output=True, text=True, check=True)
        print(child.stdout.strip().splitlines()[-1], flush=True)
    if args.upload_mib:
        print(json.dumps(against_server(f"chunked upload of {args.upload_mib} MiB",
                                        lambda port: chunked_upload(port, args.upload_mib))), flush=True)
    if args.append_s:
        print(json.dumps(against_server(f"realtime append of {args.append_s:g} s",
                                        lambda port: asyncio.run(realtime_append(port, args.append_s)))), flush=True)


if __name__ == "__main__":
    main()
