"""The recognition core that every front end calls: audio in, transcripts out.

Front ends convert their request into `AudioFormat` + `RecognitionOptions`, call
`Recognizer.transcribe`, and convert the `ChannelResult`s back; they never touch the engine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from parakeet_serve.audio import Audio, AudioFormat, decode_audio, decodes_cheaply
from parakeet_serve.audio.pauses import split_at_pauses
from parakeet_serve.audio.stream import StreamDecoder
from parakeet_serve.engine.streaming import StreamGeometry
from parakeet_serve.engine.types import Hypothesis, ModelInfo, Transcript
from parakeet_serve.errors import UnknownModel, quote
from parakeet_serve.scheduler import Scheduler
from parakeet_serve.session import StreamOptions, StreamSession
from parakeet_serve.telemetry import Telemetry, Timing
from parakeet_serve.telemetry.tracing import record_work
from parakeet_serve.text import shape_hypothesis
from parakeet_serve.usage import Usage
from parakeet_serve.word_boost import BoostLimits, SpeechContext, WordBoost, word_boost

log = logging.getLogger(__name__)

MAX_ALTERNATIVES = 10
DEFAULT_BOOST_LIMITS = BoostLimits(max_phrases=1000, max_phrase_chars=100)
# A progressively answered audio's pieces are each cut in the longest pause of their last third;
# PIECES_QUEUED of them wait for the engine at a time.
PIECE_SEARCH_SHARE, PIECES_QUEUED = 1 / 3, 2


@dataclass(frozen=True)
class RecognitionOptions:
    """What the client asked for, independent of any wire format."""

    language_code: str = ""
    model: str = ""
    max_alternatives: int = 1
    word_time_offsets: bool = False
    automatic_punctuation: bool = False
    separate_channels: bool = False
    speech_contexts: tuple[SpeechContext, ...] = ()


class Booster(Protocol):
    """What the core needs of the engine's word boosting: a cache it can fill off the inference thread,
    and how strong a boost is."""

    logprob_per_unit: float

    def prepare(self, boost: WordBoost) -> None:
        ...


@dataclass(frozen=True)
class ChannelResult:
    """The hypotheses for one channel (channel 0 holds a downmix unless channels were separated)."""

    channel: int
    hypotheses: tuple[Hypothesis, ...]
    audio_processed_s: float


class Recognizer:
    """Decodes audio, queues it for the engine and shapes the transcripts as the client asked."""

    def __init__(
        self,
        scheduler: Scheduler,
        info: ModelInfo,
        *,
        model_name: str,
        model_aliases: tuple[str, ...] = (),
        language_code: str,
        max_audio_seconds: float,
        piece_s: float = 30.0,
        geometry: StreamGeometry | None = None,
        detokenize: Callable[[list[int]], str] | None = None,
        booster: Booster | None = None,
        boost_limits: BoostLimits = DEFAULT_BOOST_LIMITS,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._telemetry = telemetry or Telemetry()
        self._geometry = geometry
        self._detokenize = detokenize
        self.info = info
        self.model_name = model_name
        self.model_aliases = model_aliases  # other names it answers to
        self.language_code = language_code
        self.max_audio_seconds = max_audio_seconds
        self._piece_s = piece_s
        self._booster = booster
        self._boost_limits = boost_limits

    def check_model(self, options: RecognitionOptions) -> None:
        """Raise `UnknownModel` unless this server serves the requested model and language."""
        if options.model and options.model != self.model_name and options.model not in self.model_aliases:
            raise UnknownModel(f"Model {quote(options.model)} is not served here; this server serves "
                               f"{self.model_name!r}.")
        if options.language_code and not _same_language(options.language_code, self.language_code):
            raise UnknownModel(f"Language {quote(options.language_code)} is not served here; this server "
                               f"recognises {self.language_code}.", param="language")

    @property
    def booster(self) -> Booster | None:
        return self._booster

    @property
    def streams(self) -> bool:
        """Whether the model can stream (`stream` admits streams)."""
        return self._geometry is not None and self._detokenize is not None

    def word_boost(self, options: RecognitionOptions) -> WordBoost | None:
        """The request's speech contexts, checked against the limits (`InvalidRequest` beyond them);
        None when there are none or this model cannot boost (then they are only logged)."""
        boost = word_boost(options.speech_contexts, self._boost_limits)
        if boost is not None and self._booster is None:
            log.info("speech contexts ignored: this model cannot boost words", extra={"phrases": len(boost.phrases)})
            return None
        return boost

    @contextlib.contextmanager
    def stream(self, fmt: AudioFormat, options: RecognitionOptions, stream: StreamOptions) -> Iterator[StreamSession]:
        """Admit a stream for the duration of the block (`QueueFull` when the server holds its maximum)."""
        self.check_model(options)
        boost = self.word_boost(options)
        decoder = StreamDecoder(fmt, self.info.sample_rate)
        if not self.streams:
            raise UnknownModel(f"Model {self.model_name!r} is served for Recognize only; it cannot stream.")
        if boost is not None:  # build its tree while the first audio arrives (`word_boost` checked the booster)
            asyncio.get_running_loop().run_in_executor(None, self._booster.prepare, boost)
        with self._scheduler.stream(boost, stream.stop_history_s) as state:
            yield StreamSession(
                self._scheduler, state, decoder, self._geometry, self._detokenize, stream, self._telemetry, boost
            )

    async def transcribe(
        self, data: bytes, fmt: AudioFormat, options: RecognitionOptions, usage: Usage | None = None,
        rpc: str = "Recognize",
    ) -> list[ChannelResult]:
        """Recognise a whole audio (one result per channel when channels are separated).

        `usage`, when given, receives what the request cost: audio, queue wait and compute seconds;
        `rpc` names the front end's call in the audio metrics.
        """
        self.check_model(options)
        boost = self.word_boost(options)
        tracer = self._telemetry.tracer
        with self._scheduler.arriving() as queued:
            audio = await self._decode(data, fmt, boost, mix_down=not options.separate_channels)
            tracks = list(audio.samples)
            wanted = max(1, min(options.max_alternatives, MAX_ALTERNATIVES))
            timings = [Timing("offline") for _ in tracks]
            try:
                transcripts = await asyncio.gather(*(
                    self._scheduler.transcribe(t, wanted, timing, on_queued=queued, boost=boost)
                    for t, timing in zip(tracks, timings, strict=True)
                ))
            finally:
                for timing in timings:
                    record_work(tracer, timing)
        self._account(audio.duration_s, timings, usage, rpc)
        with tracer.start_as_current_span("decode"):
            return self._shape(transcripts, options, wanted, audio.duration_s)

    async def transcribe_progressively(
        self, data: bytes, fmt: AudioFormat, options: RecognitionOptions, usage: Usage | None = None,
        rpc: str = "Recognize",
    ) -> AsyncIterator[Hypothesis]:
        """Recognise a whole audio (downmixed) in pieces of at most `piece_s` cut at its pauses, yielding
        each piece's best hypothesis (times from the start of the audio) as soon as it and the pieces
        before it are done.

        `PIECES_QUEUED` pieces wait at a time: the next is queued while one runs, so the engine never
        idles between them, and one long file never fills the queue that other requests share.
        """
        self.check_model(options)
        boost = self.word_boost(options)
        tracer = self._telemetry.tracer
        with self._scheduler.arriving() as queued:
            audio = await self._decode(data, fmt, boost)
            mono, rate = audio.mono(), audio.sample_rate
            spans = iter(split_at_pauses(mono, rate, self._piece_s, self._piece_s * PIECE_SEARCH_SHARE))
            pending: collections.deque[tuple[int, int, asyncio.Task[Transcript], Timing]] = collections.deque()

            def queue_next() -> None:
                for start, end in itertools.islice(spans, 1):
                    timing = Timing("offline")
                    work = self._scheduler.transcribe(mono[start:end], 1, timing, on_queued=queued, boost=boost)
                    pending.append((start, end, asyncio.ensure_future(work), timing))

            try:
                for _ in range(PIECES_QUEUED):
                    queue_next()
                while pending:
                    start, end, work, timing = pending[0]
                    try:
                        transcript = await work
                    finally:
                        record_work(tracer, timing)
                    pending.popleft()
                    queue_next()
                    self._account((end - start) / rate, [timing], usage, rpc)
                    best = shape_hypothesis(transcript.best, options.word_time_offsets, options.automatic_punctuation)
                    yield best.shifted(round(start / rate, 3))
            finally:
                for _, _, work, _ in pending:  # a caller that left frees the queue at once
                    work.cancel()

    async def _decode(self, data: bytes, fmt: AudioFormat, boost: WordBoost | None, mix_down: bool = True) -> Audio:
        """The audio, and the boost's tree built (or found cached) on the same worker thread."""
        def work() -> Audio:
            audio = decode_audio(data, fmt, target_rate=self.info.sample_rate, max_seconds=self.max_audio_seconds,
                                 mix_down=mix_down)
            if boost is not None:  # only when the engine can boost (`word_boost`)
                self._booster.prepare(boost)
            return audio

        with self._telemetry.tracer.start_as_current_span("audio.decode"):
            if boost is None and decodes_cheaply(data, fmt, self.info.sample_rate):
                # Two thread hand-offs a request cost more: 7 of the 30 ms the engine idled between
                # batches of 32 callers on 2 cores (issue 19).
                return work()
            return await asyncio.to_thread(work)

    def _account(self, audio_s: float, timings: list[Timing], usage: Usage | None, rpc: str) -> None:
        self._telemetry.metrics.audio_seconds.labels(rpc).inc(audio_s)
        if usage is not None:
            usage.add(audio_s, timings)

    def _shape(
        self, transcripts: list[Transcript], options: RecognitionOptions, wanted: int, duration_s: float
    ) -> list[ChannelResult]:
        return [
            ChannelResult(
                channel=i,
                hypotheses=tuple(
                    shape_hypothesis(h, options.word_time_offsets, options.automatic_punctuation)
                    for h in t.hypotheses[:wanted]
                ),
                audio_processed_s=duration_s,
            )
            for i, t in enumerate(transcripts)
        ]


def _same_language(asked: str, served: str) -> bool:
    """`en` and `en-US` match `en-US`; `de-DE` does not."""
    asked_parts, served_parts = asked.lower().split("-"), served.lower().split("-")
    return asked_parts[0] == served_parts[0] and (len(asked_parts) == 1 or asked_parts == served_parts)
