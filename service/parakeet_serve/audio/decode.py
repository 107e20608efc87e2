"""Decode audio bytes into float samples at the model's rate.

Containers (WAV, FLAC, Ogg/Opus) and headerless mu-law/A-law are read by libsndfile through
`soundfile`; MP3, MP4/M4A and WebM by FFmpeg through PyAV; headerless 16-bit PCM is a plain
reinterpretation; resampling is soxr's.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import soxr

from parakeet_serve.audio.formats import Audio, AudioFormat, Encoding
from parakeet_serve.audio.sniff import COMPRESSED, Container, sniff_container
from parakeet_serve.errors import AudioTooLong, InvalidAudio

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
MAX_CHANNELS = 8

# Headerless 16-bit PCM at the wanted rate is only reinterpreted: 15 us for 90 KB, 0.27 ms for 1 MB.
CHEAP_DECODE_BYTES = 1 << 20
_RAW_SUBTYPES = {Encoding.MULAW: "ULAW", Encoding.ALAW: "ALAW"}
# Which declared encodings a detected container may carry; clients often leave it unspecified.
_CONTAINER_ENCODINGS = {
    Container.WAV: {Encoding.UNSPECIFIED, Encoding.LINEAR_PCM, Encoding.MULAW, Encoding.ALAW},
    Container.FLAC: {Encoding.UNSPECIFIED, Encoding.FLAC, Encoding.LINEAR_PCM},
    Container.OGG: {Encoding.UNSPECIFIED, Encoding.OGGOPUS},
    **{container: {Encoding.UNSPECIFIED} for container in COMPRESSED},
}


def decode_audio(data: bytes, fmt: AudioFormat, *, target_rate: int, max_seconds: float) -> Audio:
    """Decode `data` as declared by `fmt` (or as its sniffed container) and resample to `target_rate`.

    Raises `InvalidAudio` or `AudioTooLong` with a sentence that names the problem.
    """
    if not data:
        raise InvalidAudio("The audio is empty.")
    container = sniff_container(data)
    if container is Container.MP3 and not data.startswith(b"ID3") and fmt.encoding is not Encoding.UNSPECIFIED:
        container = None  # a bare MP3 frame sync is also what declared 16-bit PCM near zero looks like
    if container is not None:
        if fmt.encoding not in _CONTAINER_ENCODINGS[container]:
            raise InvalidAudio(f"The audio is a {container} file but the request declares {fmt.encoding.name}.")
        read = _read_compressed if container in COMPRESSED else _read_container
        samples, rate = read(data, container, max_seconds)
    else:
        samples, rate = _read_raw(data, fmt, max_seconds)
    return Audio(_resample(samples, rate, target_rate), target_rate)


def decodes_cheaply(data: bytes, fmt: AudioFormat, target_rate: int) -> bool:
    """Whether decoding `data` is a mere reinterpretation of at most `CHEAP_DECODE_BYTES`: cheaper done
    at once than handed to a thread and back."""
    return (fmt.encoding is Encoding.LINEAR_PCM and fmt.sample_rate == target_rate
            and len(data) <= CHEAP_DECODE_BYTES and sniff_container(data) is None)


def _read_container(data: bytes, container: Container, max_seconds: float) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            check_shape(f.samplerate, f.channels)
            if f.frames > 0:
                _check_duration(f.frames / f.samplerate, max_seconds)
            samples = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, ValueError, EOFError) as exc:
        raise InvalidAudio(f"The {container} audio is corrupt or truncated ({_first_line(exc)}).") from None
    if samples.shape[0] == 0:
        raise InvalidAudio(f"The {container} audio holds no samples.")
    _check_duration(samples.shape[0] / rate, max_seconds)
    if not np.isfinite(samples).all():
        raise InvalidAudio(f"The {container} audio holds NaN or infinite samples.")
    return np.ascontiguousarray(samples.T), rate


def _read_compressed(data: bytes, container: Container, max_seconds: float) -> tuple[np.ndarray, int]:
    import av  # FFmpeg is loaded only when such a file arrives

    chunks: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), mode="r") as source:
            if not source.streams.audio:
                raise InvalidAudio(f"The {container} file holds no audio stream.")
            stream = source.streams.audio[0]
            rate, channels = stream.rate, stream.channels
            check_shape(rate, channels)
            planar = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
            decoded = 0
            for frame in source.decode(stream):
                for converted in planar.resample(frame):
                    chunks.append(converted.to_ndarray())
                    decoded += converted.samples
                _check_duration(decoded / rate, max_seconds)  # stop early rather than decode hours
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or _first_line(exc)
        raise InvalidAudio(f"The {container} audio is corrupt or truncated ({reason}).") from None
    if not chunks:
        raise InvalidAudio(f"The {container} audio holds no samples.")
    samples = np.concatenate(chunks, axis=1).astype(np.float32)
    if not np.isfinite(samples).all():
        raise InvalidAudio(f"The {container} audio holds NaN or infinite samples.")
    return np.clip(samples, -1, 1), rate


def _read_raw(data: bytes, fmt: AudioFormat, max_seconds: float) -> tuple[np.ndarray, int]:
    encoding = fmt.encoding
    if encoding in (Encoding.UNSPECIFIED, Encoding.FLAC, Encoding.OGGOPUS):
        expected = {"unspecified": "a WAV, FLAC or Ogg header", "flac": "a FLAC header", "oggopus": "an Ogg header"}
        raise InvalidAudio(
            f"The audio does not start with {expected[encoding.value]}; "
            "send headerless audio as LINEAR_PCM, MULAW or ALAW with its sample rate."
        )
    channels = fmt.channels or 1
    if fmt.sample_rate <= 0:
        raise InvalidAudio(f"Headerless {encoding.name} audio needs sample_rate_hertz.")
    check_shape(fmt.sample_rate, channels)
    width = 2 if encoding is Encoding.LINEAR_PCM else 1
    if len(data) % (width * channels):
        raise InvalidAudio(
            f"{encoding.name} audio of {len(data)} bytes is not a whole number of "
            f"{channels}-channel frames of {width * channels} bytes; it is truncated."
        )
    _check_duration(len(data) / (width * channels) / fmt.sample_rate, max_seconds)
    if encoding is Encoding.LINEAR_PCM:
        pcm = np.frombuffer(data, dtype="<i2").reshape(-1, channels)
        samples = pcm.astype(np.float32) / 32768.0
    else:
        samples, _ = sf.read(
            io.BytesIO(data), format="RAW", subtype=_RAW_SUBTYPES[encoding],
            samplerate=fmt.sample_rate, channels=channels, dtype="float32", always_2d=True,
        )
    return np.ascontiguousarray(samples.T), fmt.sample_rate


def _resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    if rate == target_rate:
        return samples.astype(np.float32, copy=False)
    out = soxr.resample(samples.T, rate, target_rate, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def check_shape(rate: int, channels: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidAudio(f"A sample rate of {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz.")
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidAudio(f"{channels} audio channels is outside 1-{MAX_CHANNELS}.")


def _check_duration(seconds: float, max_seconds: float) -> None:
    if seconds > max_seconds:
        raise AudioTooLong(f"The audio lasts {seconds:.1f} s, longer than the {max_seconds:g} s this server accepts.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
