"""Compressed audio files (MP3, M4A, WebM/Opus) made with FFmpeg through PyAV, for the tests."""

from __future__ import annotations

import io

import av
import numpy as np

FORMATS = {"mp3": ("mp3", "libmp3lame", 44100), "m4a": ("mp4", "aac", 48000), "webm": ("webm", "libopus", 48000)}


def encode(samples: np.ndarray, rate: int, kind: str) -> bytes:
    """Mono float `samples` at `rate` as a `kind` file (resampled to the codec's usual rate)."""
    container_format, codec, out_rate = FORMATS[kind]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=out_rate, layout="mono")
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=out_rate)
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32)[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
