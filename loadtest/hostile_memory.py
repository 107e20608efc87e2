"""Peak memory of decoding a decompression bomb: FLAC silence at 8 channels and 192 kHz (a few KB a minute),
decoded to 16 kHz mono as a request's audio is. Each size runs in a fresh process; the figure is the peak
resident memory over what the process held after its imports.

    python -m loadtest.hostile_memory --seconds 60 300
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys

import numpy as np
import soundfile as sf


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, nargs="+", default=[60, 300])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one)))
        return
    for seconds in args.seconds:
        child = subprocess.run([sys.executable, "-m", "loadtest.hostile_memory", "--one", str(seconds)],
                               capture_output=True, text=True, check=True)
        print(child.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
