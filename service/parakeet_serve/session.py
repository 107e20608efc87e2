"""One recognition stream: audio in, interim and final results out.

The session feeds audio to the scheduler in steps of `step_s` (whole encoder chunks) and keeps the
tokens of the current utterance. The streamer ends an utterance, at the chunk where it happens,
after `stop_history_s` with no token from the decoder and no audio loud enough to be speech
(`engine.loudness`), and restarts the decoder (and, for a model not trained for streaming, the
encoder's attention as for a new stream); the session turns each such endpoint, and the end of the
stream, into a final. Word times count from the start of the stream.

Two passes (for models trained with full attention, whose streamed encoding only approximates their
offline one): the streamed pass gives the interims and finds the endpoints, and each final is the
offline recognition of the utterance's audio, from where the previous utterance's audio closed
(but at most `LEAD_S` before its first token) to where this one's does (its last speech plus the
endpoint's silence), run as `Recognize` runs it. A final's `audio_processed_s` is where its audio
closes, so after pauses shorter than `LEAD_S` plus the endpoint's silence finals tile the stream.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from opentelemetry import trace

from parakeet_serve.audio.stream import StreamDecoder
from parakeet_serve.engine.streaming import StepOutput, StreamGeometry, StreamInput
from parakeet_serve.engine.types import Hypothesis, TokenSpan
from parakeet_serve.engine.words import SENTENCEPIECE_WORD_START, GrowingWords
from parakeet_serve.scheduler import Scheduler
from parakeet_serve.telemetry import Telemetry, Timing
from parakeet_serve.telemetry.tracing import record_span, record_work
from parakeet_serve.text import shape_hypothesis
from parakeet_serve.usage import Usage
from parakeet_serve.word_boost import WordBoost

if TYPE_CHECKING:
    from parakeet_serve.engine.streaming import StreamState

INTERIM_STABILITY = 0.9  # interim text only grows; just its last word may still change
MAX_UTTERANCE_S = 30.0  # speech without a pause this long is finalised at a word boundary
_ARRIVALS_KEPT = 8192  # arrival times of recent chunks, to date the end of speech (bounded memory)
# Silence kept before an utterance's first token for its second pass: as much as the demo models'
# training clips have; more would only cost compute and shift per-utterance feature statistics.
LEAD_S = 1.5
# Audio bytes decoded at a time (0.13 s of 16 kHz 16-bit PCM, 0.5 s of 8 kHz mu-law): a step runs on at
# most this much audio past its boundary, however much a client sends at once.
PIECE_BYTES = 4096
# A read that waited this long for the client means the session was keeping up (`SpeakingClock`): well under
# a real-time client's chunk (20-160 ms), well over the gap between messages a client sent at once.
RESYNC_WAIT_S = 0.01


@dataclass(frozen=True)
class StreamOptions:
    """What the client asked of a stream, independent of any wire format."""

    interim_results: bool = True
    word_time_offsets: bool = False
    automatic_punctuation: bool = False
    stop_history_s: float = 0.8


@dataclass(frozen=True)
class StreamEvent:
    """An interim or final result of the current utterance."""

    final: bool
    hypothesis: Hypothesis
    stability: float
    audio_processed_s: float


class SpeakingClock:
    """When each moment of a stream was said, as far as the server can tell, for latency and lag that hold
    under load. The time a chunk is read is not it: a server that falls behind reads later (gRPC's flow control
    holds the client's audio back), so latencies counted from the read stay small while the stream drifts
    further behind real time. Whenever the session had waited `RESYNC_WAIT_S` or more for a chunk, it was
    keeping up and that chunk was said just before it came; from there a real-time client says each second
    a second later. A moment is dated the earlier of that and its read: a client sending faster than real
    time is dated by its reads, and one that pauses (push-to-talk) is dated afresh after the pause."""

    def __init__(self, sample_rate: int) -> None:
        self._rate = sample_rate
        self._anchor: tuple[float, int] | None = None  # (when, samples said by then)
        self._ready_at = 0.0  # when the session last became ready for more audio
        self._read_at = 0.0  # when the message being taken in was read
        self._resync = True

    def message(self, now: float) -> None:
        """A message was read at `now`: its audio follows (`said`)."""
        self._read_at = now
        self._resync = self._anchor is None or now - self._ready_at >= RESYNC_WAIT_S

    def said(self, received: int) -> float:
        """When the stream's sample `received`, in the message read last, was said."""
        if self._resync or self._anchor is None:
            self._anchor, self._resync = (self._read_at, received), False
        at, samples = self._anchor
        return min(self._read_at, at + (received - samples) / self._rate)

    def ready(self, now: float) -> None:
        """The session has handled all it was given and waits for the client."""
        self._ready_at = now


@dataclass
class _Ended:
    """A final of the first pass, waiting for its second: where its audio closes and its speech ended."""

    start: int  # its first token's sample (from the stream's start)
    cut: int  # where its audio closes
    speech_end: int | None  # None: cut short in speech, with no end of speech to time the final from


class _Retained:
    """The stream's audio from where the current utterance's audio opens (two-pass streaming)."""

    def __init__(self) -> None:
        self.start = 0  # sample of the stream where the kept audio begins
        self._chunks: list[np.ndarray] = []
        self.samples = 0

    def add(self, audio: np.ndarray) -> None:
        if len(audio):
            self._chunks.append(audio)
            self.samples += len(audio)

    def take(self, cut: int) -> np.ndarray:
        """The kept audio up to sample `cut` of the stream; what follows it stays."""
        if cut <= self.start:  # the usual case, each step of an utterance: nothing to copy
            return np.zeros(0, np.float32)
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        n = min(cut - self.start, len(audio))
        rest = audio[n:]
        self._chunks, self.samples, self.start = ([rest] if len(rest) else []), len(rest), self.start + n
        return audio[:n]


class StreamSession:
    """The state of one stream between the front end and the scheduler."""

    def __init__(
        self,
        scheduler: Scheduler,
        state: StreamState,
        decoder: StreamDecoder,
        geometry: StreamGeometry,
        detokenize: Callable[[list[int]], str],
        options: StreamOptions,
        telemetry: Telemetry | None = None,
        boost: WordBoost | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._state = state  # opened with `options.stop_history_s` as its endpointing (the streamer's to apply)
        self._decoder = decoder
        self._geometry = geometry
        self._detokenize = detokenize
        self.options = options
        self._pending: list[np.ndarray] = []
        self._received = 0  # samples received at the model's rate
        self._steps_due = 1
        self._utterance: list[TokenSpan] = []
        # the utterance's, grouped as it grows
        self._words = GrowingWords(detokenize, geometry.frame_shift_s, geometry.timed_ends)
        self._last_interim = ""
        self.last_output: StepOutput | None = None
        self.finals = 0
        self.usage = Usage()
        self._telemetry = telemetry or Telemetry()
        # (samples received so far, when they were said): when the audio of a given moment was said
        self._arrived_at: deque[tuple[int, float]] = deque(maxlen=_ARRIVALS_KEPT)
        self._step_arrival = 0.0  # when the audio that completed the running step was said
        self._clock = SpeakingClock(geometry.sample_rate)
        self._boost = boost  # the second pass favours the stream's phrases too
        self._retained = _Retained() if geometry.two_pass else None
        self._ended: list[_Ended] = []  # the running step's finals, in order
        self._second_pass_s = 0.0  # audio the second pass encoded

    @property
    def audio_s(self) -> float:
        return self.last_output.audio_s if self.last_output else 0.0

    @property
    def encoder_input_s(self) -> float:
        """Seconds of input the encoder saw for this stream, both passes."""
        return (self.last_output.encoder_input_s if self.last_output else 0.0) + self._second_pass_s

    @property
    def compute_amplification(self) -> float:
        """Audio-seconds fed to the encoder per audio-second of the stream."""
        return round(self.encoder_input_s / self.audio_s, 3) if self.audio_s else 0.0

    async def push(self, data: bytes) -> AsyncIterator[StreamEvent]:
        """Take an audio chunk and run the steps it completes, giving their results as they come. A long chunk
        is taken a piece at a time, so minutes of audio sent at once cost the memory and the steps a real-time
        client's would, each step queued behind other streams' and requests' work rather than holding the
        model for all of it."""
        self._clock.message(time.monotonic())
        for start in range(0, max(len(data), 1), PIECE_BYTES):
            audio = self._decoder.feed(data[start : start + PIECE_BYTES])
            if len(audio):
                self._receive(audio)
                self._arrived_at.append((self._received, self._clock.said(self._received)))
            for event in await self._take(audio):
                yield event
        self._clock.ready(time.monotonic())

    async def _take(self, audio: np.ndarray) -> list[StreamEvent]:
        """Once the audio so far completes a step, run the step and return its results."""
        now = self._newest_said()
        due = self._geometry.samples_for_chunks(self._steps_due * self._geometry.chunks_per_step)
        if self._received < due:
            if not (len(audio) and self._endpoint_possible()):
                return []
            # Once the decoder has been silent long enough, each chunk of audio is featurised at
            # once, so the endpoint is judged on it without waiting for the next encoder chunk.
            self._step_arrival = now
            return await self._run(last=False)
        while self._geometry.samples_for_chunks(self._steps_due * self._geometry.chunks_per_step) <= self._received:
            self._steps_due += 1
        self._step_arrival = now
        return await self._run(last=False)

    def _receive(self, audio: np.ndarray) -> None:
        """Audio for the next step (and, in two passes, for its utterance's second)."""
        self._pending.append(audio)
        self._received += len(audio)
        if self._retained is not None:
            self._retained.add(audio)

    def _endpoint_possible(self) -> bool:
        """Whether the audio received has run `stop_history_s` past the utterance's last token."""
        if not self._utterance:
            return False
        geometry = self._geometry
        last_token_s = self._utterance[-1].start_frame * geometry.frame_shift_s  # as the streamer dates it
        return self._received / geometry.sample_rate - last_token_s >= self.options.stop_history_s

    async def finish(self) -> list[StreamEvent]:
        """The stream ended: decode what is left and finalise the last utterance."""
        self._receive(self._decoder.flush())
        self._step_arrival = self._newest_said()
        return await self._run(last=True)

    def _newest_said(self) -> float:
        """When the newest audio received was said (`SpeakingClock`)."""
        return self._arrived_at[-1][1] if self._arrived_at else time.monotonic()

    async def _run(self, last: bool) -> list[StreamEvent]:
        audio = np.concatenate(self._pending) if self._pending else np.zeros(0, np.float32)
        self._pending = []
        timing = Timing("stream")
        out = await self._scheduler.step(StreamInput(self._state, audio, last), timing)
        lag = time.monotonic() - self._step_arrival  # its newest audio said -> processed
        self._telemetry.metrics.stream_lag.observe(lag)
        self._scheduler.lag.observe(lag)
        self._account(out, timing)
        decoding = time.time_ns()
        events = self._results(out, last)
        if self._retained is not None:
            events = await self._second_pass(events)
        for ended in self._ended:
            if ended.speech_end is not None:
                self._observe_final_latency(ended.speech_end)
        self._ended = []
        if events:
            self._observe(events, timing, decoding)
        return events

    async def _second_pass(self, events: list[StreamEvent]) -> list[StreamEvent]:
        """Each final recognised again, offline, on its utterance's audio (a step's finals in one
        batch); a final whose audio holds no words there is dropped."""
        assert self._retained is not None
        rate, lead = self._geometry.sample_rate, round(LEAD_S * self._geometry.sample_rate)
        spans = []
        for ended in self._ended:
            self._retained.take(ended.start - lead)  # older silence goes
            start_s = self._retained.start / rate
            spans.append((ended.cut, start_s, self._retained.take(ended.cut)))
        if self._utterance:
            self._retained.take(self._sample(self._utterance[0].start_frame) - lead)
        else:
            self._drop_idle_audio()
        if not spans:
            return events
        timings = [Timing("final") for _ in spans]
        transcripts = await asyncio.gather(*(
            self._scheduler.transcribe_final(audio, timing, self._boost)
            for (_, _, audio), timing in zip(spans, timings, strict=True)
        ))
        seconds = sum(len(audio) for _, _, audio in spans) / rate
        self._second_pass_s += seconds
        self._telemetry.metrics.encoder_input_seconds.inc(seconds)
        self.usage.add(0.0, timings)
        finals = iter([
            StreamEvent(True, self._shape(t.best.shifted(start_s)), 1.0, cut / rate) if t.best.text else None
            for (cut, start_s, _), t in zip(spans, transcripts, strict=True)
        ])
        out = [next(finals) if event.final else event for event in events]
        return [e for e in out if e is not None]

    def _drop_idle_audio(self) -> None:
        """Bound the kept audio while no utterance is under way: the next one's first token cannot
        date from before the audio of the last few seconds (the first pass lags the audio by a step)."""
        assert self._retained is not None
        rate = self._geometry.sample_rate
        if self._retained.samples > MAX_UTTERANCE_S * rate:
            self._retained.take(self._retained.start + self._retained.samples - round((LEAD_S + 5.0) * rate))

    def _account(self, out: StepOutput, timing: Timing) -> None:
        """Count the audio and encoder input this step added."""
        metrics = self._telemetry.metrics
        audio_s = max(0.0, out.audio_s - self.audio_s)
        metrics.audio_seconds.labels("StreamingRecognize").inc(audio_s)
        metrics.encoder_input_seconds.inc(max(0.0, out.encoder_input_s - self.encoder_input_s))
        self.usage.add(audio_s, [timing])
        self.last_output = out

    def _observe(self, events: list[StreamEvent], timing: Timing, decoding_ns: int) -> None:
        """Latency metrics of the results, and a span for the step that produced them."""
        now = time.monotonic()
        for event in events:
            if not event.final:
                self._telemetry.metrics.interim_latency.observe(now - self._step_arrival)
        tracer = self._telemetry.tracer
        finished = time.time_ns()
        step = record_span(tracer, "stream.step", timing.enqueued_ns, finished,
                           **{"results.final": sum(e.final for e in events), "results.count": len(events)})
        context = trace.set_span_in_context(step)
        record_work(tracer, timing, context)
        record_span(tracer, "decode", decoding_ns, finished, context)

    def _results(self, out: StepOutput, last: bool) -> list[StreamEvent]:
        finals, begun = [], 0
        for end, cut in zip(out.endpoints, out.cuts, strict=True):  # utterances the streamer ended in the step
            self._utterance.extend(out.tokens[begun:end])
            begun = end
            if self._utterance:
                finals.append(self._final(cut))
        self._utterance.extend(out.tokens[begun:])
        if not self._utterance:
            return finals
        if last:
            return [*finals, self._final(self._received)]
        if finals:
            return finals
        frame_s = self._geometry.frame_shift_s
        if (out.frames - self._utterance[0].start_frame) * frame_s > MAX_UTTERANCE_S:
            return self._split_long_utterance()
        if self.options.interim_results:
            event = self._event(final=False)
            if event.hypothesis.text != self._last_interim:
                self._last_interim = event.hypothesis.text
                return [event]
        return []

    def _split_long_utterance(self) -> list[StreamEvent]:
        """Finalise all but the word in progress; the decoder runs on, so nothing is lost or repeated."""
        starts = [i for i, t in enumerate(self._utterance) if i and t.piece.startswith(SENTENCEPIECE_WORD_START)]
        if not starts:
            return []
        keep = self._utterance[starts[-1] :]
        self._utterance = self._utterance[: starts[-1]]
        self._words.clear()
        # its audio closes between the last word it keeps and the word in progress
        between = (self._utterance[-1].end_frame + keep[0].start_frame) / 2
        event = self._event(final=True)
        self._ended.append(_Ended(self._sample(self._utterance[0].start_frame), self._sample(between), None))
        self._utterance, self._last_interim = keep, ""
        self._words.clear()
        self.finals += 1
        return [event]

    def _final(self, cut: int) -> StreamEvent:
        event = self._event(final=True)
        first, last = self._utterance[0].start_frame, self._utterance[-1].start_frame
        self._ended.append(_Ended(self._sample(first), cut, self._sample(last + 1)))
        self._utterance = []
        self._words.clear()
        self._last_interim = ""
        self.finals += 1
        return event

    def _sample(self, frame: float) -> int:
        """The sample of the stream where encoder frame `frame` begins."""
        return round(frame * self._geometry.frame_shift_s * self._geometry.sample_rate)

    def _event(self, final: bool) -> StreamEvent:
        tokens = self._utterance
        text = self._detokenize([t.token_id for t in tokens]).strip()
        words = tuple(self._words.of(tokens))
        confidence = sum(t.confidence for t in tokens) / len(tokens)
        hypothesis = self._shape(Hypothesis(text, confidence, words))
        return StreamEvent(final, hypothesis, 1.0 if final else INTERIM_STABILITY, self.audio_s)

    def _shape(self, hypothesis: Hypothesis) -> Hypothesis:
        return shape_hypothesis(hypothesis, self.options.word_time_offsets, self.options.automatic_punctuation)

    def _observe_final_latency(self, end_sample: int) -> None:
        """End of speech (the last token's frame) -> now, by when the audio of that moment arrived."""
        arrived = self._arrived_at
        at = bisect.bisect_left(arrived, (end_sample, 0.0))
        if at < len(arrived) and (at > 0 or len(arrived) < _ARRIVALS_KEPT):  # else that moment's record is gone
            self._telemetry.metrics.final_latency.observe(time.monotonic() - self._arrived_at[at][1])
