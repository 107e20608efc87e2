"""The NeMo backend's part of cache-aware streaming (`engine.streaming`): NeMo's featuriser, the
encoder's `cache_aware_stream_step` batched across streams, and NeMo's label-looping decoder
continued from each stream's state (with its per-stream phrase boosting)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np
import torch
from nemo.collections.asr.parts.submodules.subsampling import calc_length

from parakeet_serve.engine.features import pad_batch
from parakeet_serve.engine.nemo.greedy import transducer_spans
from parakeet_serve.engine.streaming import ChunkGeometry, StreamState, pair
from parakeet_serve.engine.types import ModelInfo, TokenSpan

_FULL_ATTENTION_CHUNK = 4  # encoder frames per chunk when a full-attention model streams


class StreamingEngine(Protocol):
    """What the stream model uses of its engine: the model, where and how it runs, and its decoders."""

    model: Any
    device: Any
    blank_id: int
    booster: Any
    info: ModelInfo

    @property
    def sample_rate(self) -> int: ...
    @property
    def frame_shift_s(self) -> float: ...
    @property
    def ctc_head(self) -> Any: ...
    @property
    def greedy_computer(self) -> Any: ...
    def autocast(self) -> AbstractContextManager[None]: ...
    def piece(self, token_id: int) -> str: ...
    def transcribe(self, audios: Sequence[np.ndarray]) -> Any: ...


class NemoStreamModel:
    def __init__(self, engine: StreamingEngine, left_context_s: float) -> None:
        self._engine = engine
        model = engine.model
        self._encoder = model.encoder
        featurizer = model.preprocessor.featurizer
        self.sample_rate = engine.sample_rate
        self.frame_shift_s = engine.frame_shift_s
        self.hop = int(featurizer.hop_length)
        self.half_window = int(featurizer.n_fft) // 2
        self.subsampling = int(getattr(model.encoder, "subsampling_factor", 1))
        # Models trained with whole-utterance normalisation (Parakeet's) stream with statistics of
        # the audio heard so far instead; cache-aware models are trained without any.
        self.running_norm = featurizer.normalize == "per_feature"
        self.trained_for_streaming = self._encoder.att_context_style == "chunked_limited"
        setup_streaming(self._encoder, left_context_s, engine.frame_shift_s)
        cfg = self._encoder.streaming_cfg
        first, later = pair(cfg.chunk_size)
        context, drop = pair(cfg.pre_encode_cache_size)[1], int(cfg.drop_extra_pre_encoded)
        self.geometry = ChunkGeometry(first, later, context, drop, smallest_tail(self._encoder, later, context, drop),
                                      int(cfg.valid_out_len))
        self._keep_all = self._encoder.att_context_style != "regular"
        self._transducer = engine.info.decoder != "ctc"
        self.booster = engine.booster

    def recognise(self, audios: list[np.ndarray]) -> None:
        self._engine.transcribe(audios)

    def log_mels(self, segments: list[np.ndarray]) -> list[np.ndarray]:
        preprocessor = self._engine.model.preprocessor
        featurizer = preprocessor.featurizer
        saved = featurizer.normalize
        featurizer.normalize = None if self.running_norm else saved
        signal, lengths = pad_batch(segments)
        frames = featurizer.get_seq_len(torch.from_numpy(lengths)).tolist()  # NeMo's count, on the host
        try:
            with torch.inference_mode():
                device = self._engine.device
                features, _ = preprocessor(input_signal=torch.from_numpy(signal).to(device),
                                           length=torch.from_numpy(lengths).to(device))
        finally:
            featurizer.normalize = saved
        host = features.float().cpu().numpy()  # the step's one read of the features, for every stream
        return [host[row, :, :n] for row, n in enumerate(frames)]

    def encode(self, signal: np.ndarray, lengths: np.ndarray, caches: list[Any],
               starting: bool) -> tuple[torch.Tensor, list[int], list[Any]]:
        device = self._engine.device
        channel, time, channel_len = self._batched_caches(caches)
        with torch.inference_mode(), self._engine.autocast():
            encoded, _, channel, time, channel_len = self._encoder.cache_aware_stream_step(
                processed_signal=torch.from_numpy(signal).to(device),
                processed_signal_length=torch.from_numpy(lengths).to(device),
                cache_last_channel=channel,
                cache_last_time=time,
                cache_last_channel_len=channel_len,
                keep_all_outputs=self._keep_all,
                drop_extra_pre_encoded=0 if starting else self.geometry.drop,
            )
        rows = [(channel[:, r : r + 1], time[:, r : r + 1], channel_len[r : r + 1]) for r in range(len(caches))]
        return encoded, self.encoded_lengths(lengths, starting), rows

    def encoded_lengths(self, lengths: np.ndarray, starting: bool) -> list[int]:
        """The output lengths the encoder's step gives for feature `lengths`, worked out on the host by NeMo's
        own formula: reading them from the device would make the step wait for it once more."""
        pre = self._encoder.pre_encode
        out = calc_length(torch.from_numpy(lengths), all_paddings=pre._left_padding + pre._right_padding,
                          kernel_size=pre._kernel_size, stride=pre._stride, ceil_mode=pre._ceil_mode,
                          repeat_num=pre._sampling_num).long()
        if not starting:
            out = (out - self.geometry.drop).clamp(min=0)
        valid = int(self._encoder.streaming_cfg.valid_out_len)
        if valid > 0 and (not self._keep_all or self._encoder.att_context_style == "regular"):
            out = out.clamp(max=valid)
        return out.tolist()

    def own(self, state: StreamState) -> None:
        state.caches, state.decoder = _copied(state.caches), _copied(state.decoder)

    def _batched_caches(self, caches: list[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch of the rows' caches; a row without caches gets the encoder's initial ones, in the dtype
        the others' are (or the encoder's weights'): fp32 ones would promote a bf16 batch's step to fp32."""
        dtype = next((c[0].dtype for c in caches if c is not None), next(self._encoder.parameters()).dtype)
        fresh = self._encoder.get_initial_cache_state(batch_size=1, dtype=dtype, device=self._engine.device)
        rows = [fresh if c is None else c for c in caches]
        return (torch.cat([r[0] for r in rows], dim=1), torch.cat([r[1] for r in rows], dim=1),
                torch.cat([r[2] for r in rows]))

    def decode(self, states: list[StreamState], encoded: torch.Tensor, lengths: list[int]) -> list[list[TokenSpan]]:
        with torch.inference_mode(), self._engine.autocast():
            if not self._transducer:
                return self._decode_ctc(states, encoded, lengths)
            plain = [r for r, st in enumerate(states) if st.boost is None]
            boosted = [r for r, st in enumerate(states) if st.boost is not None]
            if not plain or not boosted:
                return self._decode_transducer(states, encoded, lengths)
            # Boosted streams decode apart, with the biasing decoder: the others skip its fusion at every step.
            out: list[list[TokenSpan]] = [[] for _ in states]
            for rows in (plain, boosted):
                picked = encoded.index_select(0, torch.tensor(rows, device=encoded.device))
                spans = self._decode_transducer([states[r] for r in rows], picked, [lengths[r] for r in rows])
                for r, item in zip(rows, spans, strict=True):
                    out[r] = item
            return out

    def _decode_transducer(self, group: list[StreamState], encoded: torch.Tensor,
                           lengths: list[int]) -> list[list[TokenSpan]]:
        """Continue each stream's transducer hypothesis over its new frames (label-looping greedy); the
        streams are all boosted or all not."""
        boosted = group[0].boost is not None
        computer = self.booster.computer if boosted else self._engine.greedy_computer
        previous = None
        if any(st.decoder is not None for st in group):
            previous = computer.merge_to_batched_state([st.decoder for st in group])
        spans, state = transducer_spans(computer, encoded, torch.tensor(lengths, device=encoded.device),
                                        self._engine.piece, [st.utterance_start for st in group], previous,
                                        self._boost_ids(group, encoded.device) if boosted else None)
        for st, item in zip(group, computer.split_batched_state(state)[: len(group)], strict=True):
            st.decoder = item
        return spans

    def _boost_ids(self, group: list[StreamState], device: torch.device) -> torch.Tensor:
        """Each boosted stream's model id; a stream's model is pinned at its first decoding, so the decoder
        state it carries across steps and utterances always refers to the same model."""
        for st in group:
            if st.boost_id is None:
                st.boost_id = self.booster.acquire([st.boost])[0]
        return torch.tensor([st.boost_id for st in group], device=device)

    def _decode_ctc(self, group: list[StreamState], encoded: torch.Tensor, lengths: list[int]) -> list[list[TokenSpan]]:
        """Greedy CTC over the new frames; a label repeated across a chunk boundary collapses."""
        log_probs = self._engine.ctc_head(encoder_output=encoded)
        best, labels = log_probs.max(dim=-1)
        host = torch.stack([best.exp().double(), labels.double()]).cpu().numpy()  # one read of the device
        best, labels = host[0].tolist(), host[1].astype(np.int64).tolist()
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


def _copied(value: Any) -> Any:
    """`value` with every tensor in it copied (through lists, tuples and dataclasses: NeMo's decoder state)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list | tuple):
        return type(value)(_copied(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _copied(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    return value


def setup_streaming(encoder: Any, left_context_s: float, frame_s: float) -> None:
    """The chunking a model streams with: the one a cache-aware model was trained with, or for a
    full-attention model chunks of `_FULL_ATTENTION_CHUNK` frames over a bounded left context."""
    if encoder.att_context_style == "chunked_limited":
        encoder.setup_streaming_params()
        return
    chunk = _FULL_ATTENTION_CHUNK
    left = max(1, round(left_context_s / frame_s / chunk))
    encoder.setup_streaming_params(chunk_size=chunk, shift_size=chunk, left_chunks=left)


def smallest_tail(encoder: Any, later: int, context: int, drop: int) -> int:
    """The fewest new feature frames that give a later chunk an encoder frame. A stream's last,
    partial chunk with fewer (under one encoder frame of audio) has nothing to encode, and the
    encoder fails on an empty chunk, so it is left out."""
    weight = next(encoder.parameters())
    with torch.inference_mode():
        for n in range(1, later + 1):
            frames = context + n
            x = torch.zeros(1, frames, int(encoder._feat_in), device=weight.device, dtype=weight.dtype)
            _, length = encoder.pre_encode(x=x, lengths=torch.tensor([frames], device=weight.device))
            if int(length[0]) > drop:
                return n
    return later
