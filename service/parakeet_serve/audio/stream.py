"""Decode streamed audio chunk by chunk into mono float samples at the model's rate.

Chunks may split a sample or a frame anywhere; the remainder waits for the next chunk. With no
encoding declared, the first chunk may start with a WAV header (Riva's sample clients stream
files like that): the header's format wins and its bytes are skipped. Resampling is soxr's
streaming resampler, so chunk boundaries leave no seams.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf
import soxr

from parakeet_serve.audio.decode import check_shape
from parakeet_serve.audio.formats import AudioFormat, Encoding
from parakeet_serve.errors import InvalidAudio

MAX_HEADER_BYTES = 64 * 1024
_WAV_SUBTYPES = {"PCM_16": Encoding.LINEAR_PCM, "ULAW": Encoding.MULAW, "ALAW": Encoding.ALAW}
_STREAMABLE = (Encoding.UNSPECIFIED, Encoding.LINEAR_PCM, Encoding.MULAW, Encoding.ALAW)


class StreamDecoder:
    """Turns a stream's audio chunks into float32 mono samples at `target_rate`."""

    def __init__(self, fmt: AudioFormat, target_rate: int) -> None:
        if fmt.encoding not in _STREAMABLE:
            raise InvalidAudio(
                f"Streaming takes LINEAR_PCM, MULAW or ALAW audio (or a WAV stream), not {fmt.encoding.name}; "
                "send whole FLAC or Ogg/Opus files to Recognize."
            )
        # a declared rate or channel count is checked now, before the stream takes a slot (a WAV header may
        # still replace a valid one)
        check_shape(fmt.sample_rate or target_rate, fmt.channels or 1)
        self._target_rate = target_rate
        self._pending = b""
        self._header_done = False
        self._fmt = fmt
        self._resampler: soxr.ResampleStream | None = None
        self.samples_in = 0  # input frames decoded, at the input rate

    @property
    def input_rate(self) -> int:
        return self._fmt.sample_rate

    def feed(self, data: bytes) -> np.ndarray:
        """Samples decoded from `data` (and what earlier chunks left over)."""
        self._pending += data
        if not self._header_done and not self._read_header():
            return np.zeros(0, np.float32)
        width = self._fmt.channels * (2 if self._fmt.encoding is Encoding.LINEAR_PCM else 1)
        usable = len(self._pending) - len(self._pending) % width
        chunk, self._pending = self._pending[:usable], self._pending[usable:]
        return self._convert(chunk, last=False)

    def flush(self) -> np.ndarray:
        """What the resampler still holds at the end of the stream; a partial frame is dropped."""
        if not self._header_done:
            if not self._pending:
                return np.zeros(0, np.float32)
            self._read_header(ended=True)  # settles the format or raises; never waits at the end
            return np.concatenate([self.feed(b""), self._convert(b"", last=True)])
        self._pending = b""
        return self._convert(b"", last=True)

    def _read_header(self, ended: bool = False) -> bool:
        """Settle the format from a WAV header or the declared fields; False while a header may be incomplete."""
        head = self._pending[:4]
        if head in (b"RIFF", b"RIFX") or (len(head) < 4 and b"RIFF".startswith(head) and not ended):
            offset = _wav_data_offset(self._pending)
            if offset is None:
                if ended or len(self._pending) > MAX_HEADER_BYTES:
                    raise InvalidAudio("The stream starts like a WAV file but no data chunk follows its header.")
                return False
            self._fmt = _wav_format(self._pending[:offset], self._fmt)
            self._pending = self._pending[offset:]
        elif self._fmt.encoding is Encoding.UNSPECIFIED:
            raise InvalidAudio(
                "The stream declares no encoding and does not start with a WAV header; "
                "set encoding and sample_rate_hertz."
            )
        if self._fmt.sample_rate <= 0:
            raise InvalidAudio(f"Streamed {self._fmt.encoding.name} audio needs sample_rate_hertz.")
        channels = self._fmt.channels or 1
        check_shape(self._fmt.sample_rate, channels)
        self._fmt = AudioFormat(self._fmt.encoding, self._fmt.sample_rate, channels)
        if self._fmt.sample_rate != self._target_rate:
            self._resampler = soxr.ResampleStream(self._fmt.sample_rate, self._target_rate, 1, "float32", "HQ")
        self._header_done = True
        return True

    def _convert(self, data: bytes, last: bool) -> np.ndarray:
        channels = self._fmt.channels
        if self._fmt.encoding is Encoding.LINEAR_PCM:
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        elif data:
            subtype = "ULAW" if self._fmt.encoding is Encoding.MULAW else "ALAW"
            samples, _ = sf.read(io.BytesIO(data), format="RAW", subtype=subtype, samplerate=self._fmt.sample_rate,
                                 channels=1, dtype="float32")
        else:
            samples = np.zeros(0, np.float32)
        frames = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32) if channels > 1 else samples
        self.samples_in += len(frames)
        if self._resampler is None:
            return np.ascontiguousarray(frames, dtype=np.float32)
        return self._resampler.resample_chunk(frames, last=last)


def _wav_data_offset(data: bytes) -> int | None:
    """Where the samples of a RIFF/WAVE stream begin, or None until the header is complete."""
    if len(data) < 12:
        return None
    if data[8:12] != b"WAVE":
        raise InvalidAudio("The stream starts with a RIFF header that is not WAVE audio.")
    order = "<" if data[:4] == b"RIFF" else ">"
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack(order + "I", data[pos + 4 : pos + 8])
        if chunk_id == b"data":
            return pos + 8
        pos += 8 + size + (size & 1)  # chunks are padded to even sizes
    return None


def _wav_format(header: bytes, declared: AudioFormat) -> AudioFormat:
    """The format a WAV header announces (libsndfile reads it; the data size may be unknown)."""
    try:
        info = sf.info(io.BytesIO(header + b"\0" * 8))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise InvalidAudio(f"The stream's WAV header is corrupt ({str(exc).strip().splitlines()[0]}).") from None
    encoding = _WAV_SUBTYPES.get(info.subtype)
    if encoding is None:
        raise InvalidAudio(f"Streamed WAV audio must be 16-bit PCM, mu-law or A-law, not {info.subtype}.")
    if declared.encoding not in (Encoding.UNSPECIFIED, encoding):
        raise InvalidAudio(f"The stream's WAV header says {encoding.name} but the request declares "
                           f"{declared.encoding.name}.")
    return AudioFormat(encoding, info.samplerate, info.channels)
