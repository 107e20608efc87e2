"""Audio: declared formats, container sniffing, decoding and resampling."""

from parakeet_serve.audio.decode import decode_audio, decodes_cheaply
from parakeet_serve.audio.formats import Audio, AudioFormat, Encoding

__all__ = ["Audio", "AudioFormat", "Encoding", "decode_audio", "decodes_cheaply"]
