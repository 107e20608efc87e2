"""Audio decoding: every encoding and container, resampling, channels, and refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from parakeet_serve.audio import AudioFormat, Encoding, decode_audio, decodes_cheaply
from parakeet_serve.errors import AudioTooLong, InvalidAudio
from tests.audio.compressed import encode
from tests.conftest import pcm16, speechlike

TARGET = 16000


def tone(freq: float, rate: int, seconds: float = 1.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * (freq + 200 * c) * t) for c in range(channels)]).astype(np.float32)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


def encoded(samples: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples.T, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


CASES = {
    # name: (bytes builder, declared format)
    "raw pcm": (lambda s, r: pcm16(s), lambda r: AudioFormat(Encoding.LINEAR_PCM, r, 1)),
    "wav unspecified": (lambda s, r: encoded(s, r, "WAV", "PCM_16"), lambda r: AudioFormat()),
    "wav declared pcm": (lambda s, r: encoded(s, r, "WAV", "PCM_16"), lambda r: AudioFormat(Encoding.LINEAR_PCM, r)),
    "wav float": (lambda s, r: encoded(s, r, "WAV", "FLOAT"), lambda r: AudioFormat()),
    "wav mulaw": (lambda s, r: encoded(s, r, "WAV", "ULAW"), lambda r: AudioFormat(Encoding.MULAW, r)),
    "flac unspecified": (lambda s, r: encoded(s, r, "FLAC", "PCM_16"), lambda r: AudioFormat()),
    "flac declared": (lambda s, r: encoded(s, r, "FLAC", "PCM_16"), lambda r: AudioFormat(Encoding.FLAC, r)),
    "raw mulaw": (lambda s, r: encoded(s, r, "RAW", "ULAW"), lambda r: AudioFormat(Encoding.MULAW, r, 1)),
    "raw alaw": (lambda s, r: encoded(s, r, "RAW", "ALAW"), lambda r: AudioFormat(Encoding.ALAW, r, 1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_every_encoding_and_rate_decodes_to_the_same_tone(case: str, rate: int) -> None:
    build, declare = CASES[case]
    audio = decode_audio(build(tone(440, rate), rate), declare(rate), target_rate=TARGET, max_seconds=60)
    assert audio.sample_rate == TARGET
    assert audio.duration_s == pytest.approx(1.0, abs=0.01)
    assert peak_hz(audio.mono(), TARGET) == pytest.approx(440, abs=3)


def test_only_small_headerless_pcm_at_the_target_rate_counts_as_cheap_to_decode() -> None:
    pcm = AudioFormat(Encoding.LINEAR_PCM, TARGET, 1)
    five_s, forty_s = pcm16(tone(440, TARGET, 5.0)), pcm16(tone(440, TARGET, 40.0))
    assert decodes_cheaply(five_s, pcm, TARGET)
    assert not decodes_cheaply(forty_s, pcm, TARGET)  # over 1 MB: a thread decodes it
    assert not decodes_cheaply(five_s, AudioFormat(Encoding.LINEAR_PCM, 8000, 1), TARGET)  # to resample
    assert not decodes_cheaply(encoded(tone(440, TARGET), TARGET, "WAV", "PCM_16"), pcm, TARGET)  # a container
    assert not decodes_cheaply(encoded(tone(440, TARGET), TARGET, "RAW", "ULAW"),
                               AudioFormat(Encoding.MULAW, TARGET, 1), TARGET)


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_ogg_opus_decodes(rate: int) -> None:
    data = encoded(tone(440, rate, seconds=2.0), rate, "OGG", "OPUS")
    audio = decode_audio(data, AudioFormat(Encoding.OGGOPUS, rate), target_rate=TARGET, max_seconds=60)
    assert audio.duration_s == pytest.approx(2.0, abs=0.05)
    assert peak_hz(audio.mono(), TARGET) == pytest.approx(440, abs=5)


def test_stereo_keeps_both_channels_when_asked_and_mixes_down_otherwise() -> None:
    stereo = tone(300, 44100, channels=2)  # left 300 Hz, right 500 Hz
    fmt = AudioFormat(Encoding.LINEAR_PCM, 44100, 2)
    kept = decode_audio(pcm16(stereo), fmt, target_rate=TARGET, max_seconds=60, mix_down=False)
    assert kept.channels == 2
    assert peak_hz(kept.samples[0], TARGET) == pytest.approx(300, abs=3)
    assert peak_hz(kept.samples[1], TARGET) == pytest.approx(500, abs=3)
    mixed = decode_audio(pcm16(stereo), fmt, target_rate=TARGET, max_seconds=60)
    assert mixed.channels == 1 and mixed.mono().shape == (kept.samples.shape[1],)
    assert np.allclose(mixed.mono(), kept.samples.mean(axis=0), atol=1e-5)  # mixed, then resampled: the same


def test_container_rate_wins_over_declared_rate() -> None:
    data = encoded(tone(440, 8000), 8000, "WAV", "PCM_16")
    audio = decode_audio(data, AudioFormat(Encoding.LINEAR_PCM, 44100), target_rate=TARGET, max_seconds=60)
    assert audio.duration_s == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize(
    ("data", "fmt", "error", "phrase"),
    [
        (b"", AudioFormat(Encoding.LINEAR_PCM, 16000), InvalidAudio, "empty"),
        (b"\x00" * 33, AudioFormat(Encoding.LINEAR_PCM, 16000), InvalidAudio, "truncated"),
        (b"\x00" * 64, AudioFormat(), InvalidAudio, "WAV, FLAC or Ogg header"),
        (b"\x00" * 64, AudioFormat(Encoding.LINEAR_PCM), InvalidAudio, "needs sample_rate_hertz"),
        (b"\x00" * 64, AudioFormat(Encoding.LINEAR_PCM, 4000), InvalidAudio, "outside 8000"),
        (b"\x00" * 64, AudioFormat(Encoding.LINEAR_PCM, 16000, 9), InvalidAudio, "channels"),
        (b"\x00" * 64, AudioFormat(Encoding.FLAC, 16000), InvalidAudio, "FLAC header"),
        (b"\x00" * 64000, AudioFormat(Encoding.LINEAR_PCM, 16000), AudioTooLong, "longer than"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", AudioFormat(), InvalidAudio, "corrupt or truncated"),
        (b"fLaC\x00\x00", AudioFormat(), InvalidAudio, "corrupt or truncated"),
    ],
)
def test_bad_audio_is_refused_with_a_reason(data: bytes, fmt: AudioFormat, error: type, phrase: str) -> None:
    with pytest.raises(error, match=phrase):
        decode_audio(data, fmt, target_rate=TARGET, max_seconds=1.0)


def test_nan_samples_are_refused() -> None:
    samples = tone(440, 16000)
    samples[0, 100] = np.nan
    with pytest.raises(InvalidAudio, match="NaN"):
        decode_audio(encoded(samples, 16000, "WAV", "FLOAT"), AudioFormat(), target_rate=TARGET, max_seconds=60)


def test_long_container_is_refused_before_decoding() -> None:
    data = encoded(tone(440, 8000, seconds=3.0), 8000, "FLAC", "PCM_16")
    with pytest.raises(AudioTooLong, match=r"3\.0 s"):
        decode_audio(data, AudioFormat(), target_rate=TARGET, max_seconds=2.0)


@pytest.mark.parametrize("kind", ["mp3", "m4a", "webm"])
def test_compressed_files_decode_to_the_same_audio(kind: str) -> None:
    speech = speechlike(2.0)[0]
    data = encode(speech, 16000, kind)
    audio = decode_audio(data, AudioFormat(), target_rate=16000, max_seconds=60)
    assert audio.duration_s == pytest.approx(2.0, abs=0.1)
    decoded = audio.mono()
    # codecs delay and pad: align on the best lag, then the waveform must match closely
    lag = int(np.argmax(np.correlate(decoded[:8000], speech[:4000], mode="valid")))
    overlap = min(len(speech), len(decoded) - lag)
    correlation = np.corrcoef(decoded[lag:lag + overlap], speech[:overlap])[0, 1]
    assert correlation > 0.9, correlation


@pytest.mark.parametrize("kind", ["mp3", "m4a", "webm"])
def test_truncated_compressed_files_are_refused_or_decode_what_is_there(kind: str) -> None:
    data = encode(speechlike(2.0)[0], 16000, kind)
    try:
        audio = decode_audio(data[: len(data) // 3], AudioFormat(), target_rate=16000, max_seconds=60)
    except InvalidAudio as exc:
        container = {"mp3": "MP3", "m4a": "MP4", "webm": "WebM"}[kind]
        assert str(exc).startswith(f"The {container} audio is corrupt or truncated"), exc
    else:
        assert 0 < audio.duration_s < 2.0


def test_declared_pcm_that_looks_like_an_mp3_frame_is_still_pcm() -> None:
    data = b"\xff\xff" * 8000  # 16-bit samples of -1: the bytes of an MPEG frame sync
    audio = decode_audio(data, AudioFormat(Encoding.LINEAR_PCM, 16000), target_rate=16000, max_seconds=60)
    assert audio.duration_s == pytest.approx(0.5)


def flac_bomb(seconds: float, rate: int = 192000, channels: int = 8) -> bytes:
    """Silence at the highest rate and channel count accepted: a few KB a minute of FLAC."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, channels, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((rate, channels), np.float32)
        for _ in range(int(seconds)):
            f.write(block)
    return buffer.getvalue()


@pytest.mark.parametrize("mix_down", [True, False], ids=["mixed-down", "channels-kept"])
def test_a_decompression_bomb_costs_memory_in_proportion_to_the_output_not_the_input(mix_down: bool) -> None:
    """8 channels at 192 kHz are 96 times the 16 kHz mono the model reads: decoded, mixed down and resampled a
    block at a time, the peak of what decoding allocates stays a small multiple of what it returns."""
    import tracemalloc

    data = flac_bomb(20)
    assert len(data) < 200_000  # 20 s of 8 x 192 kHz in this little
    tracemalloc.start()
    try:
        audio = decode_audio(data, AudioFormat(), target_rate=TARGET, max_seconds=60, mix_down=mix_down)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert audio.channels == (1 if mix_down else 8) and audio.duration_s == pytest.approx(20, abs=0.01)
    assert peak < 4 * audio.samples.nbytes + 4 * 2**20, f"{peak / 2**20:.0f} MiB for {audio.samples.nbytes / 2**20:.0f}"
