"""Streamed audio decoding: any chunking gives what decoding the whole audio at once gives."""

from __future__ import annotations

import numpy as np
import pytest

from parakeet_serve.audio import AudioFormat, Encoding, decode_audio
from parakeet_serve.audio.stream import StreamDecoder
from parakeet_serve.errors import InvalidAudio
from tests.audio.test_decode import encoded, tone
from tests.conftest import pcm16

TARGET = 16000

CASES = {
    "pcm 16 kHz": (lambda s, r: pcm16(s), lambda r, c: AudioFormat(Encoding.LINEAR_PCM, r, c)),
    "wav header, no encoding": (lambda s, r: encoded(s, r, "WAV", "PCM_16"), lambda r, c: AudioFormat()),
    "wav header, pcm declared": (lambda s, r: encoded(s, r, "WAV", "PCM_16"), lambda r, c: AudioFormat(
        Encoding.LINEAR_PCM, r)),
    "mulaw": (lambda s, r: encoded(s, r, "RAW", "ULAW"), lambda r, c: AudioFormat(Encoding.MULAW, r, c)),
    "alaw wav": (lambda s, r: encoded(s, r, "WAV", "ALAW"), lambda r, c: AudioFormat()),
}


def streamed(data: bytes, fmt: AudioFormat, chunk: int) -> np.ndarray:
    decoder = StreamDecoder(fmt, TARGET)
    parts = [decoder.feed(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return np.concatenate([*parts, decoder.flush()])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (8000, 1), (48000, 2), (44100, 1)])
def test_any_chunking_matches_whole_decoding(case: str, rate: int, channels: int) -> None:
    build, declare = CASES[case]
    samples = tone(440, rate, 0.5, channels)
    data, fmt = build(samples, rate), declare(rate, channels)
    whole = decode_audio(data, fmt, target_rate=TARGET, max_seconds=60).mono()
    for chunk in (1, 7, 320, 4096, len(data)):  # down to single bytes: headers and samples split anywhere
        out = streamed(data, fmt, chunk)
        assert len(out) == pytest.approx(len(whole), abs=2)
        n = min(len(out), len(whole))
        assert np.abs(out[:n] - whole[:n]).max() < 2e-3


@pytest.mark.parametrize(
    ("fmt", "data", "message"),
    [
        (AudioFormat(Encoding.FLAC, 16000), b"fLaC" + b"\0" * 100, "not FLAC"),
        (AudioFormat(Encoding.OGGOPUS, 16000), b"OggS" + b"\0" * 100, "not OGGOPUS"),
        (AudioFormat(), b"\1\2\3\4" * 100, "does not start with a WAV header"),
        (AudioFormat(Encoding.LINEAR_PCM), b"\0" * 100, "needs sample_rate_hertz"),
        (AudioFormat(Encoding.LINEAR_PCM, 4000), b"\0" * 100, "outside 8000"),
        (AudioFormat(Encoding.LINEAR_PCM, 16000, 99), b"\0" * 100, "channels is outside"),
        (AudioFormat(), b"RIFF\0\0\0\0WAVX" + b"\0" * 64, "not WAVE audio"),
        (AudioFormat(), b"RIFF\0\0\0\0WAVE" + b"LIST\xff\xff\x00\x00" + b"\0" * 70000, "no data chunk"),
        (AudioFormat(), encoded(tone(440, 16000, 0.1), 16000, "WAV", "FLOAT"), "16-bit PCM, mu-law or A-law"),
        (AudioFormat(Encoding.MULAW, 16000), encoded(tone(440, 16000, 0.1), 16000, "WAV", "PCM_16"), "declares MULAW"),
    ],
)
def test_refusals_name_the_problem(fmt: AudioFormat, data: bytes, message: str) -> None:
    with pytest.raises(InvalidAudio, match=message):
        streamed(data, fmt, 512)


def test_a_stream_that_ends_inside_its_header_is_refused() -> None:
    header = encoded(tone(440, 16000, 0.1), 16000, "WAV", "PCM_16")[:20]
    decoder = StreamDecoder(AudioFormat(), TARGET)
    assert len(decoder.feed(header)) == 0
    with pytest.raises(InvalidAudio, match="no data chunk follows"):
        decoder.flush()


def test_an_odd_byte_waits_for_its_partner() -> None:
    decoder = StreamDecoder(AudioFormat(Encoding.LINEAR_PCM, 16000), TARGET)
    data = pcm16(tone(440, 16000, 0.01))
    assert len(decoder.feed(data[:3])) == 1
    assert len(decoder.feed(data[3:])) == len(data) // 2 - 1
