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
from parakeet_serve.errors import AudioTooLong, InvalidAudio, UnrecognisedAudio

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
MAX_CHANNELS = 8

BLOCK_FRAMES = 1 << 16  # decoded, mixed down and resampled this many frames at a time
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


def decode_audio(data: bytes, fmt: AudioFormat, *, target_rate: int, max_seconds: float,
                 mix_down: bool = True) -> Audio:
    """Decode `data` as declared by `fmt` (or as its sniffed container), mixed down to one channel unless
    `mix_down` is False, and resampled to `target_rate`.

    Raises `InvalidAudio` or `AudioTooLong` with a sentence that names the problem.
    """
    if not data:
        raise InvalidAudio("The audio is empty.")
    container = sniff_container(data)
    if container is Container.MP3 and not data.startswith(b"ID3") and fmt.encoding is not Encoding.UNSPECIFIED:
        container = None  # a bare MP3 frame sync is also what declared 16-bit PCM near zero looks like
    if container is None:
        return _read_raw(data, fmt, _Output(target_rate, mix_down, max_seconds, fmt.encoding.name))
    if fmt.encoding not in _CONTAINER_ENCODINGS[container]:
        raise InvalidAudio(f"The audio is a {container} file but the request declares {fmt.encoding.name}.")
    read = _read_compressed if container in COMPRESSED else _read_container
    return read(data, container, _Output(target_rate, mix_down, max_seconds, str(container)))


def decodes_cheaply(data: bytes, fmt: AudioFormat, target_rate: int) -> bool:
    """Whether decoding `data` is a mere reinterpretation of at most `CHEAP_DECODE_BYTES`: cheaper done
    at once than handed to a thread and back."""
    return (fmt.encoding is Encoding.LINEAR_PCM and fmt.sample_rate == target_rate
            and len(data) <= CHEAP_DECODE_BYTES and sniff_container(data) is None)


class _Output:
    """Decoded blocks in, the audio at the target rate out. Each block is checked, mixed down (unless the
    channels are kept) and resampled as it arrives, so memory follows the output, not the input: 8 channels
    at 192 kHz, a few KB of FLAC a minute, would otherwise be 96 times the 16 kHz mono the model reads."""

    def __init__(self, target_rate: int, mix_down: bool, max_seconds: float, what: str) -> None:
        self._target_rate, self._mix_down, self._max_seconds, self._what = target_rate, mix_down, max_seconds, what
        self._rate = self._channels = self._frames = 0
        self._blocks: list[np.ndarray] = []
        self._resampler: soxr.ResampleStream | None = None

    def open(self, rate: int, channels: int, frames: int = 0) -> None:
        """The stream's shape, refused at once if absurd; `frames` when its header says how long it is."""
        check_shape(rate, channels)
        if frames > 0:
            _check_duration(frames / rate, self._max_seconds)
        self._rate, self._channels = rate, channels
        if rate != self._target_rate:
            kept = 1 if self._mix_down else channels
            self._resampler = soxr.ResampleStream(rate, self._target_rate, kept, dtype="float32", quality="HQ")

    def add(self, block: np.ndarray, owned_in_range: bool = False) -> None:
        """A block of float32 samples, shape (frames, channels); `owned_in_range` when it is a new array of
        samples known to be finite and within [-1, 1] (integer PCM scaled): two passes over it saved."""
        self._frames += block.shape[0]
        _check_duration(self._frames / self._rate, self._max_seconds)  # stop early rather than decode hours
        if not owned_in_range and not np.isfinite(block).all():
            raise InvalidAudio(f"The {self._what} audio holds NaN or infinite samples.")
        if self._mix_down and self._channels > 1:
            block = block.mean(axis=1, keepdims=True, dtype=np.float32)
        if not owned_in_range:
            block = np.clip(block, -1, 1, dtype=np.float32)  # a new array: the decoder may reuse its buffer
        self._blocks.append(block if self._resampler is None else self._resampler.resample_chunk(block))

    def audio(self) -> Audio:
        if self._frames == 0:
            raise InvalidAudio(f"The {self._what} audio holds no samples.")
        if self._resampler is not None:
            kept = self._blocks[0].shape[1]
            self._blocks.append(self._resampler.resample_chunk(np.zeros((0, kept), np.float32), last=True))
        samples = self._blocks[0] if len(self._blocks) == 1 else np.concatenate(self._blocks)
        return Audio(np.ascontiguousarray(samples.T), self._target_rate)


def _read_container(data: bytes, container: Container, out: _Output) -> Audio:
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            out.open(f.samplerate, f.channels, f.frames)
            for block in f.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
                out.add(block)
    except (sf.LibsndfileError, RuntimeError, ValueError, EOFError) as exc:
        raise InvalidAudio(f"The {container} audio is corrupt or truncated ({_first_line(exc)}).") from None
    return out.audio()


def _read_compressed(data: bytes, container: Container, out: _Output) -> Audio:
    import av  # FFmpeg is loaded only when such a file arrives

    try:
        with av.open(io.BytesIO(data), mode="r") as source:
            if not source.streams.audio:
                raise InvalidAudio(f"The {container} file holds no audio stream.")
            stream = source.streams.audio[0]
            out.open(stream.rate, stream.channels)
            planar = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)
            for frame in source.decode(stream):
                for converted in planar.resample(frame):
                    out.add(converted.to_ndarray().T)
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or _first_line(exc)
        raise InvalidAudio(f"The {container} audio is corrupt or truncated ({reason}).") from None
    return out.audio()


def _read_raw(data: bytes, fmt: AudioFormat, out: _Output) -> Audio:
    encoding = fmt.encoding
    if encoding in (Encoding.UNSPECIFIED, Encoding.FLAC, Encoding.OGGOPUS):
        expected = {"unspecified": "a WAV, FLAC or Ogg header", "flac": "a FLAC header", "oggopus": "an Ogg header"}
        raise (UnrecognisedAudio if encoding is Encoding.UNSPECIFIED else InvalidAudio)(
            f"The audio does not start with {expected[encoding.value]}; "
            "send headerless audio as LINEAR_PCM, MULAW or ALAW with its sample rate."
        )
    channels = fmt.channels or 1
    if fmt.sample_rate <= 0:
        raise InvalidAudio(f"Headerless {encoding.name} audio needs sample_rate_hertz.")
    width = 2 if encoding is Encoding.LINEAR_PCM else 1
    check_shape(fmt.sample_rate, channels)
    if len(data) % (width * channels):
        raise InvalidAudio(
            f"{encoding.name} audio of {len(data)} bytes is not a whole number of "
            f"{channels}-channel frames of {width * channels} bytes; it is truncated."
        )
    out.open(fmt.sample_rate, channels, len(data) // (width * channels))
    if encoding is Encoding.LINEAR_PCM:
        pcm = np.frombuffer(data, dtype="<i2").reshape(-1, channels)
        for start in range(0, pcm.shape[0], BLOCK_FRAMES):
            block = pcm[start:start + BLOCK_FRAMES].astype(np.float32)
            block *= 1 / 32768  # in place: the block is new, and int16 / 32768 lies in [-1, 1)
            out.add(block, owned_in_range=True)
    else:
        with sf.SoundFile(io.BytesIO(data), format="RAW", subtype=_RAW_SUBTYPES[encoding],
                          samplerate=fmt.sample_rate, channels=channels) as f:
            for block in f.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
                out.add(block)
    return out.audio()


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
