"""One recognition stream: audio in, interim and final results out.

The session feeds audio to the scheduler in steps of `step_s` (whole encoder chunks), keeps the
tokens of the current utterance, and ends an utterance when the decoder has emitted nothing for
`stop_history_s` (an endpoint) or when the stream ends. After a final the decoder starts afresh;
the encoder's context runs on across utterances. Word times count from the start of the stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from parakeet_serve.audio.stream import StreamDecoder
from parakeet_serve.engine.streaming import StepOutput, StreamInput, StreamState
from parakeet_serve.engine.types import Hypothesis
from parakeet_serve.engine.words import SENTENCEPIECE_WORD_START, TokenSpan, group_words
from parakeet_serve.scheduler import Scheduler
from parakeet_serve.text import shape_hypothesis

INTERIM_STABILITY = 0.9  # interim text only grows; just its last word may still change
MAX_UTTERANCE_S = 30.0  # speech without a pause this long is finalised at a word boundary


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


@dataclass(frozen=True)
class StreamGeometry:
    """How much audio completes the n-th step, from the engine's chunking."""

    samples_for_chunks: Callable[[int], int]
    chunks_per_step: int
    frame_shift_s: float


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
    ) -> None:
        self._scheduler = scheduler
        self._state = state
        self._decoder = decoder
        self._geometry = geometry
        self._detokenize = detokenize
        self.options = options
        self._pending: list[np.ndarray] = []
        self._received = 0  # samples received at the model's rate
        self._steps_due = 1
        self._utterance: list[TokenSpan] = []
        self._last_interim = ""
        self.last_output: StepOutput | None = None
        self.finals = 0

    @property
    def audio_s(self) -> float:
        return self.last_output.audio_s if self.last_output else 0.0

    @property
    def encoder_input_s(self) -> float:
        return self.last_output.encoder_input_s if self.last_output else 0.0

    @property
    def compute_amplification(self) -> float:
        """Audio-seconds fed to the encoder per audio-second of the stream."""
        return round(self.encoder_input_s / self.audio_s, 3) if self.audio_s else 0.0

    async def push(self, data: bytes) -> list[StreamEvent]:
        """Take an audio chunk; once the audio completes a step, run the step and return its results."""
        audio = self._decoder.feed(data)
        if len(audio):
            self._pending.append(audio)
            self._received += len(audio)
        due = self._geometry.samples_for_chunks(self._steps_due * self._geometry.chunks_per_step)
        if self._received < due:
            return []
        while self._geometry.samples_for_chunks(self._steps_due * self._geometry.chunks_per_step) <= self._received:
            self._steps_due += 1
        return await self._run(last=False)

    async def finish(self) -> list[StreamEvent]:
        """The stream ended: decode what is left and finalise the last utterance."""
        self._pending.append(self._decoder.flush())
        events = await self._run(last=True)
        if self._utterance:
            events.append(self._final())
        return events

    async def _run(self, last: bool) -> list[StreamEvent]:
        audio = np.concatenate(self._pending) if self._pending else np.zeros(0, np.float32)
        self._pending = []
        out = await self._scheduler.step(StreamInput(self._state, audio, last))
        self.last_output = out
        self._utterance.extend(out.tokens)
        if not self._utterance:
            return []
        frame_s = self._geometry.frame_shift_s
        silence_s = (out.frames - (self._utterance[-1].start_frame + 1)) * frame_s
        if silence_s >= self.options.stop_history_s and not last:
            return [self._final()]
        if (out.frames - self._utterance[0].start_frame) * frame_s > MAX_UTTERANCE_S and not last:
            return self._split_long_utterance()
        if self.options.interim_results and not last:
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
        event = self._event(final=True)
        self._utterance, self._last_interim = keep, ""
        self.finals += 1
        return [event]

    def _final(self) -> StreamEvent:
        event = self._event(final=True)
        self._utterance = []
        self._last_interim = ""
        self._state.reset_decoder()
        self.finals += 1
        return event

    def _event(self, final: bool) -> StreamEvent:
        tokens = self._utterance
        text = self._detokenize([t.token_id for t in tokens]).strip()
        words = tuple(group_words(tokens, self._detokenize, self._geometry.frame_shift_s))
        confidence = sum(t.confidence for t in tokens) / len(tokens)
        hypothesis = shape_hypothesis(
            Hypothesis(text, confidence, words), self.options.word_time_offsets, self.options.automatic_punctuation
        )
        return StreamEvent(final, hypothesis, 1.0 if final else INTERIM_STABILITY, self.audio_s)

