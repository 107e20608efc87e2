"""The ONNX backend's part of cache-aware streaming (`engine.streaming`): NumPy log-mels, the export's
cache-aware encoder graphs (one for an utterance's first chunk, one for the later chunks) batched
across streams, and the engine's batched greedy decoders continued from each stream's state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from parakeet_serve.engine.features import FeatureConfig, LogMel
from parakeet_serve.engine.onnx.boosting import PhraseTree
from parakeet_serve.engine.onnx.greedy import GreedyDecoder
from parakeet_serve.engine.onnx.layout import STREAM_ENCODER, STREAM_ENCODER_FIRST
from parakeet_serve.engine.streaming import ChunkGeometry, StreamState
from parakeet_serve.engine.types import ModelInfo, TokenSpan
from parakeet_serve.word_boost import WordBoost

_CACHES = ("cache_last_channel", "cache_last_time", "cache_last_channel_len")


class StreamingEngine(Protocol):
    """What the stream model uses of its engine: its features, graphs, decoders and boosting."""

    sample_rate: int
    frame_shift_s: float
    subsampling: int
    int8: bool
    feature_config: FeatureConfig
    log_mel: LogMel
    greedy: GreedyDecoder
    booster: Any
    info: ModelInfo

    def session(self, name: str, int8: bool) -> Any: ...
    def ctc_log_probs(self, encoded: np.ndarray) -> np.ndarray: ...
    def trees(self, boosts: Sequence[WordBoost | None]) -> list[PhraseTree | None]: ...
    def transcribe(self, audios: Sequence[np.ndarray]) -> Any: ...


class OnnxStreamModel:
    def __init__(self, engine: StreamingEngine, streaming: dict[str, Any]) -> None:
        self._engine = engine
        self.booster = engine.booster
        features = engine.feature_config
        self.sample_rate = engine.sample_rate
        self.frame_shift_s = engine.frame_shift_s
        self.hop = features.hop
        self.half_window = features.n_fft // 2
        self.subsampling = engine.subsampling
        self.running_norm = features.normalize == "per_feature"
        self.trained_for_streaming = bool(streaming["trained_for_streaming"])
        self.geometry = ChunkGeometry(*(int(streaming[k]) for k in
                                        ("first", "later", "context", "drop", "min_tail", "out_frames")))
        self._graphs = {True: engine.session(STREAM_ENCODER_FIRST, engine.int8),
                        False: engine.session(STREAM_ENCODER, engine.int8)}
        self._fresh = (np.zeros(streaming["cache_last_channel"], np.float32),
                       np.zeros(streaming["cache_last_time"], np.float32), np.zeros((), np.int64))

    def recognise(self, audios: list[np.ndarray]) -> None:
        self._engine.transcribe(audios)

    def log_mels(self, segments: list[np.ndarray]) -> list[np.ndarray]:
        return self._engine.log_mel.frames(segments)

    def encode(self, signal: np.ndarray, lengths: np.ndarray, caches: list[Any],
               starting: bool) -> tuple[np.ndarray, list[int], list[Any]]:
        rows = [self._fresh if c is None else c for c in caches]
        feeds = {name: np.stack([r[k] for r in rows]) for k, name in enumerate(_CACHES)}
        encoded, encoded_len, channel, time, channel_len = self._graphs[starting].run(
            None, {"audio_signal": signal, "length": lengths, **feeds})
        return encoded, encoded_len.tolist(), [(channel[r], time[r], channel_len[r]) for r in range(len(rows))]

    def own(self, state: StreamState) -> None:  # the decoder's states are copies already
        state.caches = tuple(np.array(c, copy=True) for c in state.caches)

    def decode(self, states: list[StreamState], encoded: np.ndarray, lengths: list[int]) -> list[list[TokenSpan]]:
        offsets = [st.frames for st in states]
        if self._engine.info.decoder == "ctc":
            previous = [st.ctc_last for st in states]
            spans, lasts = self._engine.greedy.ctc(self._engine.ctc_log_probs(encoded), np.array(lengths), previous,
                                                   offsets)
            for st, label in zip(states, lasts, strict=True):
                st.ctc_last = label
            return spans
        spans, ends = self._engine.greedy.transducer(encoded, np.array(lengths), [st.decoder for st in states],
                                                     offsets, self._engine.trees([st.boost for st in states]))
        for st, end in zip(states, ends, strict=True):
            st.decoder = end
        return spans
