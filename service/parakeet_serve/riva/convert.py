"""Translation between Riva's generated protobuf types and the core's plain types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from riva.client.proto import riva_asr_pb2, riva_audio_pb2, riva_common_pb2

from parakeet_serve.audio import AudioFormat, Encoding
from parakeet_serve.engine.types import Hypothesis
from parakeet_serve.errors import InvalidAudio
from parakeet_serve.recognizer import ChannelResult, RecognitionOptions
from parakeet_serve.session import StreamEvent, StreamOptions
from parakeet_serve.word_boost import SpeechContext

_ENCODINGS = {
    riva_audio_pb2.ENCODING_UNSPECIFIED: Encoding.UNSPECIFIED,
    riva_audio_pb2.LINEAR_PCM: Encoding.LINEAR_PCM,
    riva_audio_pb2.FLAC: Encoding.FLAC,
    riva_audio_pb2.MULAW: Encoding.MULAW,
    riva_audio_pb2.ALAW: Encoding.ALAW,
    riva_audio_pb2.OGGOPUS: Encoding.OGGOPUS,
}


def audio_format(config: riva_asr_pb2.RecognitionConfig) -> AudioFormat:
    """The declared audio format; unknown enum values are refused here, not deep in a decoder."""
    encoding = _ENCODINGS.get(config.encoding)
    if encoding is None:
        raise InvalidAudio(f"Audio encoding {config.encoding} is not supported; use LINEAR_PCM, FLAC, MULAW, ALAW "
                           "or OGGOPUS.")
    if config.sample_rate_hertz < 0 or config.audio_channel_count < 0:
        raise InvalidAudio("sample_rate_hertz and audio_channel_count must not be negative.")
    return AudioFormat(encoding, config.sample_rate_hertz, config.audio_channel_count)


def recognition_options(config: riva_asr_pb2.RecognitionConfig) -> RecognitionOptions:
    return RecognitionOptions(
        language_code=config.language_code,
        model=config.model,
        max_alternatives=config.max_alternatives,
        word_time_offsets=config.enable_word_time_offsets,
        automatic_punctuation=config.enable_automatic_punctuation,
        separate_channels=config.enable_separate_recognition_per_channel,
        speech_contexts=tuple(SpeechContext(tuple(c.phrases), c.boost) for c in config.speech_contexts),
    )


def stream_options(config: riva_asr_pb2.StreamingRecognitionConfig, default_stop_history_ms: float) -> StreamOptions:
    """Riva's endpointing semantics: an absent or non-positive field means the server's default."""
    stop_ms = config.config.endpointing_config.stop_history
    return StreamOptions(
        interim_results=config.interim_results,
        word_time_offsets=config.config.enable_word_time_offsets,
        automatic_punctuation=config.config.enable_automatic_punctuation,
        stop_history_s=(stop_ms if stop_ms > 0 else default_stop_history_ms) / 1000,
    )


def ignored_fields(config: riva_asr_pb2.RecognitionConfig) -> list[str]:
    """Fields the client set that this server accepts but does not act on (reported in the request log)."""
    ignored = ["custom_configuration"] if len(config.custom_configuration) else []
    ignored += [name for name in ("profanity_filter", "verbatim_transcripts") if getattr(config, name)]
    if config.HasField("diarization_config") and config.diarization_config.enable_speaker_diarization:
        ignored.append("diarization_config")
    endpointing = config.endpointing_config
    ignored += [
        f"endpointing_config.{name}"
        for name in ("start_history", "start_threshold", "stop_threshold", "stop_history_eou", "stop_threshold_eou")
        if getattr(endpointing, name) > 0
    ]
    return ignored


def recognize_response(
    results: Sequence[ChannelResult], request_id: riva_common_pb2.RequestId | None = None
) -> riva_asr_pb2.RecognizeResponse:
    response = riva_asr_pb2.RecognizeResponse(results=[_result(r) for r in results])
    if request_id is not None and request_id.value:
        response.id.CopyFrom(request_id)
    return response


def streaming_response(event: StreamEvent) -> riva_asr_pb2.StreamingRecognizeResponse:
    result = riva_asr_pb2.StreamingRecognitionResult(
        alternatives=[_alternative(event.hypothesis)],
        is_final=event.final,
        stability=event.stability,
        audio_processed=event.audio_processed_s,
    )
    return riva_asr_pb2.StreamingRecognizeResponse(results=[result])


def _result(result: ChannelResult) -> riva_asr_pb2.SpeechRecognitionResult:
    return riva_asr_pb2.SpeechRecognitionResult(
        channel_tag=result.channel,
        audio_processed=result.audio_processed_s,
        alternatives=[_alternative(h) for h in result.hypotheses],
    )


def _alternative(h: Hypothesis) -> riva_asr_pb2.SpeechRecognitionAlternative:
    return riva_asr_pb2.SpeechRecognitionAlternative(
        transcript=h.text,
        confidence=h.confidence,
        words=[
            riva_asr_pb2.WordInfo(
                word=w.text, start_time=round(w.start_s * 1000), end_time=round(w.end_s * 1000), confidence=w.confidence
            )
            for w in h.words
        ],
    )


def config_response(
    model_name: str, parameters: Mapping[str, str], asked: str = ""
) -> riva_asr_pb2.RivaSpeechRecognitionConfigResponse:
    """The served model, or nothing when the client asked for another one by name."""
    response = riva_asr_pb2.RivaSpeechRecognitionConfigResponse()
    if not asked or asked == model_name:
        response.model_config.add(model_name=model_name, parameters=dict(parameters))
    return response
