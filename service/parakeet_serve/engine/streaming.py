"""Cache-aware streaming: every audio sample is featurised once and every frame encoded once.

A stream's state carries all a step needs: the last samples (the STFT looks 16 ms around each
feature frame), features not yet encoded, the subsampling's feature context, the encoder's
attention and convolution caches, and the decoder's state. A step featurises new audio, encodes
whole chunks of the model's attention context (batched across streams) and continues the
greedy decoder from where the last step left it, so text is only ever extended. After every
chunk it checks for an endpoint (silence after speech, heard by the decoder and in the audio's
loudness); at one it reports where the utterance ended and restarts the decoder for the next.

This module is the bookkeeping, in NumPy, shared by the backends; each backend's `StreamModel`
(`nemo/stream_model`, `onnx/stream_model`) computes features, encoder steps and decoding.

For a model trained with chunked limited attention and causal convolutions (the demo model),
this reproduces the offline encoding exactly. Models trained with full attention (the Parakeet
checkpoints) run the same path with a bounded left context, the chunk as look-ahead and running
per-mel normalisation in place of whole-utterance statistics, which costs them accuracy against
their offline transcripts; their sessions stream in two passes (`parakeet_serve.session`), for
which each endpoint also says where the utterance's audio ends.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from parakeet_serve.engine.loudness import Loudness
from parakeet_serve.engine.types import TokenSpan
from parakeet_serve.word_boost import WordBoost

_FEATURE_CONTEXT = 2  # feature frames of audio kept before the next frame: the STFT window reaches back 16 ms


@dataclass(frozen=True)
class ChunkGeometry:
    """How a model's encoder is fed, in feature frames: the first chunk (no context before it), later
    chunks, the subsampling's context repeated before each later chunk and the encoder frames that
    context yields (dropped), the fewest new frames that still yield one, and the encoder frames a
    chunk gives."""

    first: int
    later: int
    context: int
    drop: int
    min_tail: int
    out_frames: int


@dataclass(frozen=True)
class StreamInput:
    """New audio (mono float32 at the model's rate) for one stream; `last` flushes it."""

    state: StreamState
    audio: np.ndarray
    last: bool = False


@dataclass(frozen=True)
class StepOutput:
    """What one step added to a stream: new tokens (absolute encoder frames) and its progress."""

    tokens: tuple[TokenSpan, ...]
    frames: int  # encoder frames of the stream so far
    audio_s: float  # audio the encoded frames depend on: what the stream has had processed
    encoder_input_s: float  # feature frames fed to the encoder so far, as seconds (context included)
    endpoints: tuple[int, ...] = ()  # an utterance ended after tokens[:k] for each k (the stream's decoder restarted)
    cuts: tuple[int, ...] = ()  # for each endpoint, the sample (from the stream's start) where its audio closes


@dataclass
class StreamState:
    """Where one stream stands; owned by the streaming core, touched only by the inference thread."""

    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    audio_offset: int = 0  # absolute sample index of audio[0]
    features: np.ndarray | None = None  # featurised, not yet encoded: (mels, n)
    loud: np.ndarray | None = None  # which of those frames are loud enough to be speech: (n,)
    next_feature: int = 0  # absolute index of the next feature frame to compute
    pre_encode: np.ndarray | None = None  # the subsampling's context: last feature frames fed
    caches: Any = None  # the encoder's caches, the backend's own; None: as at an utterance's start
    step_rows: _StepRows | None = None  # the step whose batch arrays `caches` and `decoder` are slices of
    frames: int = 0  # encoder frames produced
    encoded_features: int = 0  # feature frames encoded (each once)
    decoder: Any = None  # the transducer's decoding state, the backend's own; None starts an utterance afresh
    ctc_last: int = -1  # the CTC label of the previous frame (repeats collapse across chunks)
    utterance_start: int = 0  # encoder frame where the current decoder state began
    loudness: Loudness = field(default_factory=Loudness)
    speech_feature: int = -1  # the latest feature frame with speech: loud, or heard by a token's encoder frame
    loud_feature: int = -1  # the latest loud feature frame encoded (how the decoder chunks audio cannot move it)
    utterance_tokens: int = 0  # tokens the decoder emitted since the utterance began
    endpoint_s: float = 0.0  # silence after speech that ends an utterance; 0 never
    encoder_input_frames: int = 0  # feature frames fed to the encoder, context included
    feature_stats: np.ndarray | None = None  # per-mel count, sum, sum of squares (running normalisation)
    boost: WordBoost | None = None  # phrases favoured in every utterance of the stream
    boost_id: int | None = None  # its model in the decoder, pinned from the first decoding until `close`
    ended: bool = False

    def start_utterance(self, restart_encoder: bool) -> None:
        """After a final: a fresh decoder; with `restart_encoder` also attention and convolution
        caches emptied as at the stream's start, so the next utterance is encoded as `Recognize` would
        encode it alone. The subsampling's few frames of context stay, which keeps the encoder's
        frames on the stream's timeline."""
        self.decoder = None
        self.ctc_last = -1
        self.utterance_start = self.frames
        self.utterance_tokens = 0
        if restart_encoder:  # nothing left of the last step's batch arrays
            self.caches, self.step_rows = None, None
        self.loudness.start_utterance()


@dataclass(eq=False)
class _StepRows:
    """The streams of one encoder step, whose caches and decoder states are slices of that step's
    batch arrays: one row still in use keeps the whole batch alive (a stream paused by push-to-talk
    would hold every other stream's state of its last step), so once most rows have moved on the rest
    are copied out."""

    rows: list[weakref.ref[StreamState]]

    def in_use(self) -> list[StreamState]:
        return [st for ref in self.rows if (st := ref()) is not None and st.step_rows is self]


class StreamModel(Protocol):
    """One backend's part of streaming: features, the cache-aware encoder step, and decoding."""

    sample_rate: int
    frame_shift_s: float  # seconds per encoder frame
    hop: int  # samples per feature frame
    half_window: int  # samples the STFT reaches either side of a frame's centre
    subsampling: int  # feature frames per encoder frame
    geometry: ChunkGeometry
    running_norm: bool  # normalise each mel by the stream's statistics so far (whole-utterance models)
    trained_for_streaming: bool  # trained with the chunked attention it streams with
    booster: Any  # word boosting (`recognizer.Booster`) or None

    def log_mels(self, segments: list[np.ndarray]) -> list[np.ndarray]:
        """Each mono audio's valid log-mel frames (mels, n), in one batch; unnormalised when `running_norm`."""
        ...

    def encode(self, signal: np.ndarray, lengths: np.ndarray, caches: list[Any],
               starting: bool) -> tuple[Any, list[int], list[Any]]:
        """One encoder step over (batch, mels, frames) features: the encoded frames (the backend's
        array), how many each row has, and each row's caches after it (`caches` rows may be None)."""
        ...

    def own(self, state: StreamState) -> None:
        """Give the stream copies of its caches and decoder state that share no batch arrays."""
        ...

    def decode(self, states: list[StreamState], encoded: Any, lengths: list[int]) -> list[list[TokenSpan]]:
        """Continue each stream's greedy decoding over its new frames (absolute frames in the spans)."""
        ...

    def recognise(self, audios: list[np.ndarray]) -> None:
        """Offline recognition of whole utterances, as the second pass runs it (for measuring)."""
        ...


@dataclass(frozen=True)
class StreamGeometry:
    """How the engine streams: how much audio completes the n-th step, from its chunking, and
    whether finals come from a second, offline pass over each utterance's audio."""

    samples_for_chunks: Callable[[int], int]
    chunks_per_step: int
    frame_shift_s: float
    sample_rate: int
    two_pass: bool = False
    timed_ends: bool = True  # the decoder gives tokens durations (TDT); else word times are settled


class Streamer:
    """Runs streaming steps over a backend's `StreamModel`; not thread-safe (the inference thread calls it)."""

    def __init__(self, model: StreamModel) -> None:
        self.model = model
        self._geometry = model.geometry
        self._feature_s = model.hop / model.sample_rate
        self.chunk_s = model.geometry.out_frames * model.frame_shift_s

    @property
    def trained_for_streaming(self) -> bool:
        """Whether the model was trained with the chunked attention it streams with (its streamed
        encoding is then its offline encoding)."""
        return self.model.trained_for_streaming

    def measure_capacity(self, sample_rate: int, batch: int, two_pass: bool = False) -> int:
        return measure_capacity(self, sample_rate, batch, two_pass=two_pass)

    def recognise(self, audios: list[np.ndarray]) -> None:
        self.model.recognise(audios)

    def open(self, boost: WordBoost | None = None, endpoint_s: float = 0.0) -> StreamState:
        """A new stream's state: `boost` favours phrases in all of its utterances; `endpoint_s` of silence after
        speech ends an utterance (0: never)."""
        return StreamState(boost=boost if self.model.booster is not None else None, endpoint_s=endpoint_s)

    def close(self, state: StreamState) -> None:
        """Unpin the stream's boosting model (any thread: the stream no longer steps)."""
        if self.model.booster is not None and state.boost_id is not None:
            self.model.booster.release([state.boost])
            state.boost_id = None

    def stream_geometry(self, step_s: float, two_pass: bool, timed_ends: bool) -> StreamGeometry:
        """How the sessions over this streamer step their streams: every `step_s` of audio (in whole encoder
        chunks), with finals from a second pass or not, and word ends timed by the decoder or settled."""
        return StreamGeometry(samples_for_chunks=self.samples_for_chunks,
                              chunks_per_step=max(1, math.ceil(step_s / self.chunk_s - 1e-6)),
                              frame_shift_s=self.model.frame_shift_s, sample_rate=self.model.sample_rate,
                              two_pass=two_pass, timed_ends=timed_ends)

    def samples_for_chunks(self, n: int) -> int:
        """Samples of audio (at the model's rate) that complete the first `n` encoder chunks."""
        features = self._geometry.first + (n - 1) * self._geometry.later
        return (features - 1) * self.model.hop + self.model.half_window

    def step(self, inputs: Sequence[StreamInput]) -> list[StepOutput]:
        """Featurise, encode and decode whatever whole chunks the new audio completes."""
        tokens: dict[int, list[TokenSpan]] = {id(i.state): [] for i in inputs}
        endpoints: dict[int, list[tuple[int, int]]] = {id(i.state): [] for i in inputs}  # (tokens before, cut)
        self._featurize(inputs)
        while True:
            ready = [i.state for i in inputs if self._chunk_ready(i.state, i.last)]
            if not ready:
                break
            first = [s for s in ready if not s.encoded_features]
            for group in (first, [s for s in ready if s.encoded_features]):
                if group:
                    for state, new in zip(group, self._encode_and_decode(group), strict=True):
                        tokens[id(state)].extend(new)
                        self._end_utterance_if_due(state, tokens, endpoints)  # a step may span a pause
        for item in inputs:  # and on audio that completed no chunk: its silence counts too
            self._end_utterance_if_due(item.state, tokens, endpoints)
        return [
            StepOutput(
                tuple(tokens[id(i.state)]),
                i.state.frames,
                self._processed_samples(i.state, i.last) / self.model.sample_rate,
                i.state.encoder_input_frames * self._feature_s,
                tuple(k for k, _ in endpoints[id(i.state)]),
                tuple(cut for _, cut in endpoints[id(i.state)]),
            )
            for i in inputs
        ]

    def _processed_samples(self, st: StreamState, last: bool) -> int:
        received = st.audio_offset + len(st.audio)
        if last or not st.encoded_features:
            return received if last else 0
        return min(received, (st.encoded_features - 1) * self.model.hop + self.model.half_window)

    # --- features ------------------------------------------------------------------------

    def _featurize(self, inputs: Sequence[StreamInput]) -> None:
        """Take in each stream's new audio and featurise, in one batch, what completes new frames."""
        segments = {id(i.state): segment for i in inputs if (segment := self._segment(i.state, i.audio, i.last))
                    is not None}
        if segments:
            for item, features in zip([i for i in inputs if id(i.state) in segments],
                                      self.model.log_mels(list(segments.values())), strict=True):
                self._add_features(item.state, features, len(segments[id(item.state)]), item.last)

    def _segment(self, st: StreamState, audio: np.ndarray, last: bool) -> np.ndarray | None:
        """The stream's audio from two frames before its next feature frame, if it completes any."""
        if len(audio):
            st.audio = np.concatenate([st.audio, audio.astype(np.float32, copy=False)])
        segment = st.audio[max(st.next_feature - _FEATURE_CONTEXT, 0) * self.model.hop - st.audio_offset :]
        if len(segment) == 0 or (not last and len(segment) < self.model.half_window + self.model.hop):
            return None
        return segment

    def _add_features(self, st: StreamState, features: np.ndarray, samples: int, last: bool) -> None:
        hop, half_window = self.model.hop, self.model.half_window
        first_frame = max(st.next_feature - _FEATURE_CONTEXT, 0)
        available = features.shape[1]
        if not last:  # a frame is final once the audio covers its whole window
            available = min(available, (samples - half_window) // hop + 1)
        skip = st.next_feature - first_frame
        if available > skip:
            # a copy: pending in a paused stream, a slice would keep the whole batch's features alive
            new = features[:, skip:available].astype(np.float32)
            loud = st.loudness.loud(new)
            st.loud = loud if st.loud is None else np.concatenate([st.loud, loud])
            if self.model.running_norm:
                new = _normalise(st, new)
            st.features = new if st.features is None else np.concatenate([st.features, new], axis=1)
            st.next_feature = first_frame + available
        keep_from = max(st.next_feature - _FEATURE_CONTEXT, 0) * hop
        st.audio = st.audio[keep_from - st.audio_offset :]
        st.audio_offset = keep_from

    def _chunk_ready(self, st: StreamState, last: bool) -> bool:
        pending = 0 if st.features is None else st.features.shape[1]
        g = self._geometry
        needed = g.later if st.encoded_features else g.first
        return pending >= needed or (last and pending >= (g.min_tail if st.encoded_features else 1))

    # --- encoder and decoder -------------------------------------------------------------

    def _encode_and_decode(self, group: list[StreamState]) -> list[list[TokenSpan]]:
        g = self._geometry
        starting = not group[0].encoded_features
        width = g.first if starting else g.later
        inputs = []
        for st in group:
            assert st.features is not None
            take, rest = st.features[:, :width], st.features[:, width:]
            # a rest shorter than the chunk is copied: as a slice it would keep the chunk alive while paused
            st.features = None if not rest.shape[1] else rest.copy() if rest.shape[1] < width else rest
            self._mark_loud(st, take.shape[1])
            fed = take if starting else np.concatenate([self._pre_encode_context(st), take], axis=1)
            st.pre_encode = fed[:, max(fed.shape[1] - g.context, 0) :]
            st.encoder_input_frames += fed.shape[1]
            st.encoded_features += take.shape[1]
            inputs.append(fed)
        lengths = np.array([fed.shape[1] for fed in inputs], np.int64)
        signal = np.zeros((len(group), inputs[0].shape[0], int(lengths.max())), np.float32)
        for row, fed in enumerate(inputs):
            signal[row, :, : fed.shape[1]] = fed
        encoded, new_frames, caches = self.model.encode(signal, lengths, [st.caches for st in group], starting)
        self._keep_caches(group, caches)
        decoded = self.model.decode(group, encoded, new_frames)
        for st, spans, n in zip(group, decoded, new_frames, strict=True):
            st.utterance_tokens += len(spans)
            if spans:  # encoder frame f has heard feature frames up to f * subsampling
                st.speech_feature = max(st.speech_feature, spans[-1].start_frame * self.model.subsampling)
            st.frames += n
        return decoded

    def _keep_caches(self, group: list[StreamState], caches: list[Any]) -> None:
        """Give each stream its caches of this step (and with them its decoder state to come), and bound
        the memory of paused streams to twice their own: when at most half of an earlier step's rows
        still use its batch arrays, those rows get copies of their own."""
        earlier = {id(st.step_rows): st.step_rows for st in group if st.step_rows is not None}
        step = _StepRows([weakref.ref(st) for st in group])
        for st, cache in zip(group, caches, strict=True):
            st.caches, st.step_rows = cache, step
        for before in earlier.values():
            if len(in_use := before.in_use()) * 2 <= len(before.rows):
                for st in in_use:
                    self.model.own(st)
                    st.step_rows = None

    def _pre_encode_context(self, st: StreamState) -> np.ndarray:
        """The subsampling's context for the next chunk; after a first chunk shorter than it (a model
        trained with no look-ahead starts on one frame), zeros in front, as the offline convolution's
        own padding is."""
        context = st.pre_encode
        assert context is not None
        missing = self._geometry.context - context.shape[1]
        return np.pad(context, ((0, 0), (missing, 0))) if missing > 0 else context

    def _end_utterance_if_due(self, st: StreamState, tokens: dict[int, list[TokenSpan]],
                              endpoints: dict[int, list[tuple[int, int]]]) -> None:
        """At `endpoint_s` of silence after the utterance's last speech, note where it ended and start afresh."""
        if not st.endpoint_s or not st.utterance_tokens:
            return
        silence = self._quiet_until(st) - (st.speech_feature + 1)
        if silence * self._feature_s >= st.endpoint_s - 1e-6:
            endpoints[id(st)].append((len(tokens[id(st)]), self._cut(st)))
            # A model trained for streaming heard speech after pauses within its context, and restarted
            # mid-stream it mishears the next utterance's first words (measured on the demo models);
            # one trained on whole single utterances has never attended to the one before.
            st.start_utterance(restart_encoder=not self.model.trained_for_streaming)

    def _cut(self, st: StreamState) -> int:
        """The sample where the ended utterance's audio closes: its last loud frame plus the endpoint's
        silence. Tokens can date the speech's end later the longer the client's chunks (the encoder has
        run further when the silence is judged), loudness cannot, so it decides when the utterance was loud."""
        loud_in_utterance = st.loud_feature >= st.utterance_start * self.model.subsampling
        speech_end = st.loud_feature if loud_in_utterance else st.speech_feature
        return (speech_end + 1) * self.model.hop + round(st.endpoint_s * self.model.sample_rate)

    def _quiet_until(self, st: StreamState) -> int:
        """The next loud feature frame already featurised, or if there is none, as far as featurised
        audio reaches: the silence is measured to there, without waiting for the encoder."""
        pending = None if st.loud is None else np.flatnonzero(st.loud)
        if pending is not None and len(pending):
            return st.encoded_features + int(pending[0])
        return st.next_feature

    def _mark_loud(self, st: StreamState, encoding: int) -> None:
        """Speech in the feature frames about to be encoded: loudness counts as heard when the encoder
        hears it, as the decoder's tokens do."""
        assert st.loud is not None
        loud = np.flatnonzero(st.loud[:encoding])
        st.loud = st.loud[encoding:]
        if len(loud):
            st.loud_feature = st.encoded_features + int(loud[-1])
            st.speech_feature = max(st.speech_feature, st.loud_feature)


def _normalise(st: StreamState, new: np.ndarray) -> np.ndarray:
    """Per-mel mean and variance over all the stream's frames so far, as NeMo's per_feature does per utterance."""
    stats = np.stack([np.full(new.shape[0], new.shape[1], np.float64), new.sum(1, dtype=np.float64),
                      np.square(new, dtype=np.float64).sum(1)])
    st.feature_stats = stats if st.feature_stats is None else st.feature_stats + stats
    count, total, squares = st.feature_stats
    mean = total / count
    std = np.sqrt(np.maximum(squares - count * mean * mean, 0) / np.maximum(count - 1, 1)) + 1e-5
    return ((new - mean[:, None]) / std[:, None]).astype(np.float32)


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    """NeMo gives (first chunk, later chunks) for causal subsampling, one number otherwise."""
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def measure_capacity(streamer: Streamer, sample_rate: int, batch: int, load: float = 0.6,
                     two_pass: bool = False, utterance_s: float = 4.0) -> int:
    """Streams the device holds in real time: a steady-state step of `batch` streams is timed, and
    the streams that keep the worker busy `load` of the time are allowed. Also warms the path up.
    With `two_pass`, each stream's audio is also recognised offline once, as `batch` utterances of
    `utterance_s` in one batch."""
    rng = np.random.default_rng(0)
    states = [streamer.open() for _ in range(batch)]
    audio = (rng.standard_normal(streamer.samples_for_chunks(3)) * 0.01).astype(np.float32)
    first, rest = audio[: streamer.samples_for_chunks(1)], audio[streamer.samples_for_chunks(1) :]
    streamer.step([StreamInput(st, first) for st in states])
    started = time.perf_counter()
    streamer.step([StreamInput(st, rest) for st in states])
    per_chunk = (time.perf_counter() - started) / 2
    if two_pass:
        utterance = (rng.standard_normal(int(utterance_s * sample_rate)) * 0.01).astype(np.float32)
        started = time.perf_counter()
        streamer.recognise([utterance] * batch)
        per_chunk += (time.perf_counter() - started) * streamer.chunk_s / utterance_s
    return max(1, int(batch * load * streamer.chunk_s / per_chunk))
