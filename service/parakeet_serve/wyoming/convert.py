"""Wyoming's events to the core's types and back; nothing here keeps state."""

from __future__ import annotations

import json
import re

import numpy as np
from wyoming.asr import Transcribe
from wyoming.audio import AudioStart
from wyoming.info import AsrModel, AsrProgram, Attribution, Info

from parakeet_serve import __version__
from parakeet_serve.audio import AudioFormat, Encoding
from parakeet_serve.audio.decode import check_shape
from parakeet_serve.errors import InvalidAudio
from parakeet_serve.recognizer import RecognitionOptions, Recognizer
from parakeet_serve.word_boost import SpeechContext

PROGRAM = "parakeet-serve"
WIDTHS = (1, 2, 4)  # bytes per sample the protocol's audio uses (1 is unsigned, as in WAV)
STREAMING_SINCE = (1, 7)  # the protocol version that brought transcript-start, -chunk and -stop
# Transcribe's names (people, devices) take priority over its terms, on Riva's boost scale.
NAME_BOOST, TERM_BOOST = 60.0, 30.0
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def info(recognizer: Recognizer) -> Info:
    """The answer to `describe`: one ASR program serving one model in its language."""
    model_id = recognizer.info.model_id
    if _HUB_ID.match(model_id):
        source = Attribution(name=model_id.split("/")[0], url=f"https://huggingface.co/{model_id}")
    else:
        source = Attribution(name=PROGRAM, url="")
    model = AsrModel(name=recognizer.model_name, description=f"{model_id} ({recognizer.info.decoder} decoder)",
                     attribution=source, installed=True, version=None, languages=[recognizer.language_code])
    return Info(asr=[AsrProgram(
        name=PROGRAM, description=f"NVIDIA Parakeet speech recognition on {recognizer.info.device}",
        version=__version__, attribution=source, installed=True, models=[model],
        supports_transcript_streaming=recognizer.streams)])


def recognition_options(transcribe: Transcribe) -> RecognitionOptions:
    """The request a `transcribe` event makes: its model (`name`), language and phrases to favour."""
    names, terms = _phrases(transcribe.transcript_names), _phrases(transcribe.transcript_terms)
    contexts = tuple(SpeechContext(phrases, boost) for phrases, boost in ((names, NAME_BOOST), (terms, TERM_BOOST))
                     if phrases)
    return RecognitionOptions(language_code=_text(transcribe.language), model=_text(transcribe.name),
                              automatic_punctuation=True, speech_contexts=contexts)


def audio_format(start: AudioStart) -> tuple[AudioFormat, int]:
    """The core's format of the audio an `audio-start` announces (16-bit once converted), and its sample width."""
    rate, width, channels = start.rate, start.width, start.channels
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rate, width, channels)):
        raise InvalidAudio("audio-start's rate, width and channels must be whole numbers.")
    if width not in WIDTHS:
        raise InvalidAudio(f"A sample width of {width} bytes is not one of 1, 2 or 4.")
    check_shape(rate, channels)
    return AudioFormat(Encoding.LINEAR_PCM, rate, channels), width


def pcm16(payload: bytes, width: int, channels: int) -> bytes:
    """A chunk's samples as 16-bit little-endian PCM (`InvalidAudio` unless it holds whole frames)."""
    if len(payload) % (width * channels):
        raise InvalidAudio(f"An audio-chunk of {len(payload)} bytes does not hold whole frames of {channels} "
                           f"channel(s) of {width}-byte samples.")
    if width == 2:
        return payload
    if width == 1:
        return ((np.frombuffer(payload, np.uint8).astype("<i2") - 128) << 8).tobytes()
    return (np.frombuffer(payload, "<i4") >> 16).astype("<i2").tobytes()


def streams_to(header: bytes) -> bool:
    """Whether the client that wrote this event header speaks the streaming transcript events (its `version`)."""
    try:
        version = json.loads(header).get("version", "")
        parts = tuple(int(p) for p in str(version).split(".")[:2])
    except (ValueError, AttributeError):
        return False
    return parts >= STREAMING_SINCE


def _phrases(values: object) -> tuple[str, ...]:
    return tuple(v for v in values if isinstance(v, str) and v.strip()) if isinstance(values, list) else ()


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
