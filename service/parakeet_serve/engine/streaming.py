"""Cache-aware streaming: every audio sample is featurised once and every frame encoded once.

A stream's state carries all a step needs: the last samples (the STFT looks 16 ms around each
feature frame), features not yet encoded, the subsampling's feature context, the encoder's
attention and convolution caches, and the decoder's state. A step featurises new audio, encodes
whole chunks of the model's attention context (batched across streams) and continues the
greedy decoder from where the last step left it, so text is only ever extended. After every
chunk it checks for an endpoint (silence after speech, heard by the decoder and in the audio's
loudness); at one it reports where the utterance ended and starts the next one afresh.

For a model trained with chunked limited attention and causal convolutions (the demo model),
this reproduces the offline encoding exactly. Models trained with full attention (the Parakeet
checkpoints) run the same path with a bounded left context, the chunk as look-ahead and running
per-mel normalisation in place of whole-utterance statistics, which costs them accuracy against
their offline transcripts; their sessions stream in two passes (`parakeet_serve.streaming`), for
which each endpoint also says where the utterance's audio ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from parakeet_serve.boosting import WordBoost
from parakeet_serve.engine.loudness import Loudness
from parakeet_serve.engine.types import StepOutput, StreamInput
from parakeet_serve.engine.words import TokenSpan

_FEATURE_CONTEXT = 2  # feature frames of audio kept before the next frame: the STFT window reaches back 16 ms


@dataclass
class StreamState:
    """Where one stream stands; owned by the streaming core, touched only by the inference thread."""

    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    audio_offset: int = 0  # absolute sample index of audio[0]
    features: torch.Tensor | None = None  # featurised, not yet encoded: (mels, n)
    loud: torch.Tensor | None = None  # which of those frames are loud enough to be speech: (n,)
    next_feature: int = 0  # absolute index of the next feature frame to compute
    pre_encode: torch.Tensor | None = None  # the subsampling's context: last feature frames fed
    caches: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    frames: int = 0  # encoder frames produced
    encoded_features: int = 0  # feature frames encoded (each once)
    decoder: Any = None  # the transducer's decoding state; None starts an utterance afresh
    ctc_last: int = -1  # the CTC label of the previous frame (repeats collapse across chunks)
    utterance_start: int = 0  # encoder frame where the current decoder state began
    loudness: Loudness = field(default_factory=Loudness)
    speech_feature: int = -1  # the latest feature frame with speech: loud, or heard by a token's encoder frame
    loud_feature: int = -1  # the latest loud feature frame encoded (how the decoder chunks audio cannot move it)
    utterance_tokens: int = 0  # tokens the decoder emitted since the utterance began
    endpoint_s: float = 0.0  # silence after speech that ends an utterance; 0 never
    encoder_input_frames: int = 0  # feature frames fed to the encoder, context included
    feature_stats: torch.Tensor | None = None  # per-mel count, sum, sum of squares (running normalisation)
    boost: WordBoost | None = None  # phrases favoured in every utterance of the stream
    boost_id: int | None = None  # its model in the decoder, pinned from the first decoding until `close`
    ended: bool = False

    def start_utterance(self) -> None:
        """After a final: a fresh decoder, and attention and convolution caches emptied as at the
        stream's start, so the next utterance is encoded as `Recognize` would encode it alone (a
        model trained on single utterances has never attended to the one before). The subsampling's
        few frames of context stay, which keeps the encoder's frames on the stream's timeline."""
        self.decoder = None
        self.ctc_last = -1
        self.utterance_start = self.frames
        self.utterance_tokens = 0
        if self.caches is not None:
            self.caches = tuple(torch.zeros_like(c) for c in self.caches)  # the initial cache state
        self.loudness.start_utterance()


class Streamer:
    """Runs streaming steps for a `NemoEngine`; not thread-safe (the inference thread calls it)."""

    def __init__(self, engine: Any, left_context_s: float) -> None:
        self._engine = engine
        model = engine.model
        self._encoder = model.encoder
        featurizer = model.preprocessor.featurizer
        self._hop = int(featurizer.hop_length)
        self._half_window = int(featurizer.n_fft) // 2
        self._feature_s = self._hop / engine.sample_rate
        self._subsampling = int(getattr(model.encoder, "subsampling_factor", 1))
        # Models trained with whole-utterance normalisation (Parakeet's) stream with statistics of
        # the audio heard so far instead; cache-aware models are trained without any.
        self._running_norm = featurizer.normalize == "per_feature"
        frame_s = engine.frame_shift_s
        if self._encoder.att_context_style == "chunked_limited":
            self._encoder.setup_streaming_params()  # the chunking the model was trained with
        else:
            chunk = 4
            left = max(1, round(left_context_s / frame_s / chunk))
            self._encoder.setup_streaming_params(chunk_size=chunk, shift_size=chunk, left_chunks=left)
        cfg = self._encoder.streaming_cfg
        self._first_chunk, self._chunk = _pair(cfg.chunk_size)
        self._pre_encode = _pair(cfg.pre_encode_cache_size)[1]
        self._drop = int(cfg.drop_extra_pre_encoded)
        self._keep_all = self._encoder.att_context_style != "regular"
        self._min_tail = self._smallest_tail(int(featurizer.nfilt))
        self.chunk_s = int(cfg.valid_out_len) * frame_s
        self._frame_s = frame_s
        self._computer = None if engine.info.decoder == "ctc" else model.decoding.decoding.decoding_computer
        self._booster = engine.booster

    @property
    def trained_for_streaming(self) -> bool:
        """Whether the model was trained with the chunked attention it streams with (its streamed
        encoding is then its offline encoding)."""
        return self._encoder.att_context_style == "chunked_limited"

    def measure_capacity(self, sample_rate: int, batch: int, two_pass: bool = False) -> int:
        return measure_capacity(self, sample_rate, batch, two_pass=two_pass)

    def recognise(self, audios: list[np.ndarray]) -> None:
        """Offline recognition of whole utterances, as the second pass runs it (for measuring)."""
        self._engine.transcribe(audios)

    def open(self, boost: WordBoost | None = None) -> StreamState:
        return StreamState(boost=boost if self._booster is not None else None)

    def close(self, state: StreamState) -> None:
        """Unpin the stream's boosting model (any thread: the stream no longer steps)."""
        if self._booster is not None and state.boost_id is not None:
            self._booster.release([state.boost])
            state.boost_id = None

    def samples_for_chunks(self, n: int) -> int:
        """Samples of audio (at the model's rate) that complete the first `n` encoder chunks."""
        features = self._first_chunk + (n - 1) * self._chunk
        return (features - 1) * self._hop + self._half_window

    def step(self, inputs: Sequence[StreamInput]) -> list[StepOutput]:
        """Featurise, encode and decode whatever whole chunks the new audio completes."""
        tokens: dict[int, list[TokenSpan]] = {id(i.state): [] for i in inputs}
        endpoints: dict[int, list[tuple[int, int]]] = {id(i.state): [] for i in inputs}  # (tokens before, cut)
        with torch.inference_mode(), self._engine.autocast():
            for item in inputs:
                self._featurize(item.state, item.audio, item.last)
            while True:
                ready = [i.state for i in inputs if self._chunk_ready(i.state, i.last)]
                if not ready:
                    break
                first = [s for s in ready if s.caches is None]
                for group in (first, [s for s in ready if s.caches is not None]):
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
                self._processed_samples(i.state, i.last) / self._engine.sample_rate,
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
        return min(received, (st.encoded_features - 1) * self._hop + self._half_window)

    # --- features ------------------------------------------------------------------------

    def _featurize(self, st: StreamState, audio: np.ndarray, last: bool) -> None:
        if len(audio):
            st.audio = np.concatenate([st.audio, audio.astype(np.float32, copy=False)])
        first_frame = max(st.next_feature - _FEATURE_CONTEXT, 0)
        start = first_frame * self._hop - st.audio_offset
        segment = st.audio[start:]
        if len(segment) == 0 or (not last and len(segment) < self._half_window + self._hop):
            return
        signal = torch.from_numpy(segment).to(self._engine.device)[None]
        with self._raw_features():
            features, length = self._engine.model.preprocessor(
                input_signal=signal, length=torch.tensor([len(segment)], device=signal.device)
            )
        available = int(length[0])
        if not last:  # a frame is final once the audio covers its whole window
            available = min(available, (len(segment) - self._half_window) // self._hop + 1)
        skip = st.next_feature - first_frame
        if available > skip:
            new = features[0, :, skip:available].float()
            loud = st.loudness.loud(new)
            st.loud = loud if st.loud is None else torch.cat([st.loud, loud])
            if self._running_norm:
                new = _normalise(st, new)
            st.features = new if st.features is None else torch.cat([st.features, new], dim=1)
            st.next_feature = first_frame + available
        keep_from = max(st.next_feature - _FEATURE_CONTEXT, 0) * self._hop
        st.audio = st.audio[keep_from - st.audio_offset :]
        st.audio_offset = keep_from

    @contextmanager
    def _raw_features(self) -> Iterator[None]:
        featurizer = self._engine.model.preprocessor.featurizer
        saved = featurizer.normalize
        featurizer.normalize = None if self._running_norm else saved
        try:
            yield
        finally:
            featurizer.normalize = saved

    def _chunk_ready(self, st: StreamState, last: bool) -> bool:
        pending = 0 if st.features is None else st.features.shape[1]
        needed = self._first_chunk if st.caches is None else self._chunk
        return pending >= needed or (last and pending >= (1 if st.caches is None else self._min_tail))

    def _smallest_tail(self, n_mels: int) -> int:
        """The fewest new feature frames that give a later chunk an encoder frame. A stream's last,
        partial chunk with fewer (under one encoder frame of audio) has nothing to encode, and the
        encoder fails on an empty chunk, so it is left out."""
        with torch.inference_mode(), self._engine.autocast():
            for n in range(1, self._chunk + 1):
                frames = self._pre_encode + n
                x = torch.zeros(1, frames, n_mels, device=self._engine.device)
                _, length = self._encoder.pre_encode(x=x, lengths=torch.tensor([frames], device=x.device))
                if int(length[0]) > self._drop:
                    return n
        return self._chunk

    # --- encoder and decoder -------------------------------------------------------------

    def _encode_and_decode(self, group: list[StreamState]) -> list[list[TokenSpan]]:
        starting = group[0].caches is None
        width = self._first_chunk if starting else self._chunk
        inputs, lengths = [], []
        for st in group:
            assert st.features is not None
            take = st.features[:, :width]
            st.features = st.features[:, take.shape[1] :] if st.features.shape[1] > take.shape[1] else None
            self._mark_loud(st, take.shape[1])
            fed = take if starting else torch.cat([self._pre_encode_context(st), take], dim=1)
            st.pre_encode = fed[:, -self._pre_encode :] if self._pre_encode else fed[:, :0]
            st.encoder_input_frames += fed.shape[1]
            st.encoded_features += take.shape[1]
            inputs.append(fed)
            lengths.append(fed.shape[1])
        signal = torch.zeros(len(group), inputs[0].shape[0], max(lengths), device=self._engine.device)
        for row, fed in enumerate(inputs):
            signal[row, :, : fed.shape[1]] = fed
        channel, time, channel_len = self._batched_caches(group)
        encoded, encoded_len, channel, time, channel_len = self._encoder.cache_aware_stream_step(
            processed_signal=signal,
            processed_signal_length=torch.tensor(lengths, device=signal.device),
            cache_last_channel=channel,
            cache_last_time=time,
            cache_last_channel_len=channel_len,
            keep_all_outputs=self._keep_all,
            drop_extra_pre_encoded=0 if starting else self._drop,
        )
        for row, st in enumerate(group):
            st.caches = (channel[:, row : row + 1], time[:, row : row + 1], channel_len[row : row + 1])
        new_frames = [int(n) for n in encoded_len]
        if self._computer is None:
            decoded = self._decode_ctc(group, encoded, new_frames)
        else:
            decoded = self._decode(group, encoded, encoded_len)
        for st, spans in zip(group, decoded, strict=True):
            st.utterance_tokens += len(spans)
            if spans:  # encoder frame f has heard feature frames up to f * subsampling
                st.speech_feature = max(st.speech_feature, spans[-1].start_frame * self._subsampling)
        for st, n in zip(group, new_frames, strict=True):
            st.frames += n
        return decoded

    def _pre_encode_context(self, st: StreamState) -> torch.Tensor:
        """The subsampling's context for the next chunk; after a first chunk shorter than it (a model
        trained with no look-ahead starts on one frame), zeros in front, as the offline convolution's
        own padding is."""
        context = st.pre_encode
        assert context is not None
        missing = self._pre_encode - context.shape[1]
        return torch.nn.functional.pad(context, (missing, 0)) if missing > 0 else context

    def _batched_caches(self, group: list[StreamState]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if group[0].caches is None:
            return self._encoder.get_initial_cache_state(batch_size=len(group), device=self._engine.device)
        channel = torch.cat([st.caches[0] for st in group], dim=1)  # type: ignore[index]
        time = torch.cat([st.caches[1] for st in group], dim=1)  # type: ignore[index]
        lengths = torch.cat([st.caches[2] for st in group])  # type: ignore[index]
        return channel, time, lengths

    def _decode(self, group: list[StreamState], encoded: torch.Tensor, lengths: torch.Tensor) -> list[list[TokenSpan]]:
        """Continue each stream's transducer hypothesis over its new frames (label-looping greedy)."""
        computer = self._computer
        previous = None
        if any(st.decoder is not None for st in group):
            previous = computer.merge_to_batched_state([st.decoder for st in group])
        hyps, state = computer(x=encoded.transpose(1, 2), out_len=lengths, prev_batched_state=previous,
                               multi_biasing_ids=self._boost_ids(group, encoded.device))
        # With CUDA graphs the computer keeps the batch size it allocated for: our streams are its
        # first rows, and the rest is padding.
        for st, item in zip(group, computer.split_batched_state(state)[: len(group)], strict=True):
            st.decoder = item
        # To host lists once: reading a GPU tensor element by element syncs the device each time.
        counts, labels, times, durations, confidence = (
            None if x is None else x.tolist() for x in hyps.get_data_without_blank()
        )
        out = []
        for row, st in enumerate(group):
            spans = []
            for k in range(counts[row]):
                start = st.utterance_start + times[row][k]
                width = durations[row][k] if durations is not None else 1
                conf = confidence[row][k] if confidence is not None else 1.0
                label = labels[row][k]
                spans.append(TokenSpan(label, self._engine.piece(label), start, start + max(width, 1), conf))
            out.append(spans)
        return out

    def _boost_ids(self, group: list[StreamState], device: torch.device) -> torch.Tensor | None:
        """Each stream's boosting model id (-1: none); a stream's model is pinned at its first decoding,
        so the decoder state it carries across steps and utterances always refers to the same model."""
        if self._booster is None:
            return None
        for st in group:
            if st.boost is not None and st.boost_id is None:
                st.boost_id = self._booster.acquire([st.boost])[0]
        return torch.tensor([-1 if st.boost_id is None else st.boost_id for st in group], device=device)

    def _end_utterance_if_due(self, st: StreamState, tokens: dict[int, list[TokenSpan]],
                              endpoints: dict[int, list[tuple[int, int]]]) -> None:
        """At `endpoint_s` of silence after the utterance's last speech, note where it ended and start afresh."""
        if not st.endpoint_s or not st.utterance_tokens:
            return
        silence = self._quiet_until(st) - (st.speech_feature + 1)
        if silence * self._feature_s >= st.endpoint_s - 1e-6:
            endpoints[id(st)].append((len(tokens[id(st)]), self._cut(st)))
            st.start_utterance()

    def _cut(self, st: StreamState) -> int:
        """The sample where the ended utterance's audio closes: its last loud frame plus the endpoint's
        silence. Tokens can date the speech's end later the longer the client's chunks (the encoder has
        run further when the silence is judged), loudness cannot, so it decides when the utterance was loud."""
        loud_in_utterance = st.loud_feature >= st.utterance_start * self._subsampling
        speech_end = st.loud_feature if loud_in_utterance else st.speech_feature
        return (speech_end + 1) * self._hop + round(st.endpoint_s * self._engine.sample_rate)

    def _quiet_until(self, st: StreamState) -> int:
        """The next loud feature frame already featurised, or if there is none, as far as featurised
        audio reaches: the silence is measured to there, without waiting for the encoder."""
        pending = None if st.loud is None else torch.nonzero(st.loud)
        if pending is not None and len(pending):
            return st.encoded_features + int(pending[0])
        return st.next_feature

    def _mark_loud(self, st: StreamState, encoding: int) -> None:
        """Speech in the feature frames about to be encoded: loudness counts as heard when the encoder
        hears it, as the decoder's tokens do."""
        assert st.loud is not None
        loud = torch.nonzero(st.loud[:encoding])
        st.loud = st.loud[encoding:]
        if len(loud):
            st.loud_feature = st.encoded_features + int(loud[-1])
            st.speech_feature = max(st.speech_feature, st.loud_feature)

    def _decode_ctc(self, group: list[StreamState], encoded: torch.Tensor, lengths: list[int]) -> list[list[TokenSpan]]:
        """Greedy CTC over the new frames; a label repeated across a chunk boundary collapses."""
        log_probs = self._engine.ctc_head(encoder_output=encoded)
        best, labels = log_probs.max(dim=-1)
        best, labels = best.exp().tolist(), labels.tolist()  # host lists: no device sync per frame
        blank = self._engine.blank_id
        out = []
        for row, st in enumerate(group):
            spans = []
            for t in range(lengths[row]):
                label = labels[row][t]
                if label != blank and label != st.ctc_last:
                    frame, confidence = st.frames + t, best[row][t]
                    spans.append(TokenSpan(label, self._engine.piece(label), frame, frame + 1, confidence))
                st.ctc_last = label
            out.append(spans)
        return out


def _normalise(st: StreamState, new: torch.Tensor) -> torch.Tensor:
    """Per-mel mean and variance over all the stream's frames so far, as NeMo's per_feature does per utterance."""
    stats = torch.stack([torch.full_like(new[:, 0], new.shape[1]), new.sum(1), (new * new).sum(1)])
    st.feature_stats = stats if st.feature_stats is None else st.feature_stats + stats
    count, total, squares = st.feature_stats
    mean = total / count
    std = ((squares - count * mean * mean).clamp(min=0) / (count - 1).clamp(min=1)).sqrt() + 1e-5
    return (new - mean[:, None]) / std[:, None]


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
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
