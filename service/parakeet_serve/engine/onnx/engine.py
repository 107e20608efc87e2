"""Batched recognition with ONNX Runtime, on graphs in onnx-asr's layout (`parakeet-serve export`, or
a community export of Parakeet): no PyTorch at serve time.

Features come from NumPy (`features.py`); the encoder runs once per batch; greedy decoding is batched
too: every step runs the decoder+joint graph for all items still decoding, so a batch costs as many
decoder calls as its longest item needs, not the sum of them. Transducers (RNN-T, TDT) and CTC,
with word times and confidences from the same per-token frames and probabilities as the NeMo engine.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parakeet_serve.audio.pauses import split_at_pauses
from parakeet_serve.engine.base import WarmupShape, pick_head, sub_batches, warmup_clips
from parakeet_serve.engine.features import FeatureConfig, LogMel
from parakeet_serve.engine.onnx.beam import beam_search
from parakeet_serve.engine.onnx.boosting import PhraseTree, TreeBooster
from parakeet_serve.engine.onnx.greedy import GreedyDecoder
from parakeet_serve.engine.onnx.layout import CTC_HEAD, CTC_MODEL, DECODER_JOINT, ENCODER, STREAM_ENCODER, TOKENIZER
from parakeet_serve.engine.streaming import Streamer
from parakeet_serve.engine.types import (
    Hypothesis,
    ModelInfo,
    Recognition,
    TokenSpan,
    Transcript,
    joined,
    runners_up,
    transcripts,
)
from parakeet_serve.engine.words import SENTENCEPIECE_WORD_START, PendingTranscript
from parakeet_serve.errors import ModelLoadError
from parakeet_serve.word_boost import WordBoost

log = logging.getLogger(__name__)

_MIN_BEAM = 4  # as the NeMo engine's beam for alternatives


class OnnxEngine:
    """Recognises batches of mono float32 audio at `sample_rate`; one thread calls it (the scheduler's)."""

    def __init__(self, directory: Path, *, model_id: str, decoder: str = "auto", provider: str = "auto",
                 int8: bool = False, long_audio_seconds: float = 480.0, shape: WarmupShape | None = None) -> None:
        import onnxruntime

        self._ort = onnxruntime
        self.directory = directory
        self.int8 = int8
        self._long_audio_s = long_audio_seconds
        config = self._config = _read_json(directory / "config.json")
        self._pieces, self.blank_id = _read_vocabulary(directory / "vocab.txt")
        self._durations = [int(d) for d in config.get("durations", [])]
        self._causal = bool(config.get("causal_downsampling", False))
        self.subsampling = int(config.get("subsampling_factor", 8))
        features = FeatureConfig(
            sample_rate=int(config.get("sample_rate", 16000)), n_mels=int(config.get("features_size", 80)),
            n_fft=int(config.get("n_fft", 512)), window_size_s=float(config.get("window_size", 0.025)),
            window_stride_s=float(config.get("window_stride", 0.01)),
            normalize=str(config.get("normalize", "per_feature")))
        self.feature_config = features
        self.log_mel = LogMel(features)
        self._providers = _providers(provider, onnxruntime.get_available_providers(), directory)
        if "CUDAExecutionProvider" in self._providers:
            onnxruntime.preload_dlls()  # the CUDA and cuDNN libraries pip installed (the image's, torch's)
        self._head = self._pick_head(decoder, str(config.get("model_type", "")))
        longest = features.frames(min(shape.audio_s, long_audio_seconds)) if shape else 0  # longer: in pieces
        profile = tensorrt_profile(features.n_mels, longest, shape.max_batch) if shape else {}
        self._encoder = self.session(ENCODER if self._transducer_dir else CTC_MODEL, int8, tensorrt=profile)
        joint = self.session(DECODER_JOINT, int8, threads=1) if self._head != "ctc" else None
        self.greedy = GreedyDecoder(self._pieces, self.blank_id, joint, self._durations,
                                    int(config.get("max_tokens_per_step", 10)))
        # A CTC model's own graph gives log-probs; its head alone (hybrids, and streaming) takes encoder output.
        ctc_head = self._head == "ctc" and (directory / CTC_HEAD).is_file()
        self._ctc_head = self.session(CTC_HEAD, False) if ctc_head else None
        # Boosting spells phrases with the export's SentencePiece model, and needs a transducer.
        tokenizer = directory / TOKENIZER
        self.booster = TreeBooster(tokenizer, len(self._pieces)) if joint and tokenizer.is_file() else None
        self.sample_rate = features.sample_rate
        self.frame_shift_s = features.window_stride_s * self.subsampling
        device = "cuda" if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(self._providers) else "cpu"
        self.info = ModelInfo(
            model_id=model_id, architecture=f"onnx:{config.get('model_type', 'nemo-conformer')}",
            decoder=self._head, device=device, precision="int8" if int8 else "fp32",
            sample_rate=self.sample_rate, frame_shift_s=self.frame_shift_s,
            supports_alternatives=self._head != "ctc",
        )

    # --- recognition ----------------------------------------------------------------------

    def transcribe(self, audios: Sequence[np.ndarray], alternatives: Sequence[int] | None = None,
                   boosts: Sequence[WordBoost | None] | None = None) -> list[Transcript]:
        """Recognise each audio (see `recognise`), words and all."""
        return transcripts(self.recognise(audios, alternatives, boosts))

    def recognise(self, audios: Sequence[np.ndarray], alternatives: Sequence[int] | None = None,
                  boosts: Sequence[WordBoost | None] | None = None) -> list[Recognition]:
        """Recognise each audio, leaving greedy words to build off this thread; `alternatives[i]` asks
        for up to that many hypotheses of item i (a transducer's beam search after the greedy best), and
        `boosts[i]` favours phrases in item i's greedy decoding."""
        wanted = list(alternatives) if alternatives is not None else [1] * len(audios)
        favoured = list(boosts) if boosts is not None else [None] * len(audios)
        long = {i for i, a in enumerate(audios) if len(a) > self._long_audio_s * self.sample_rate}
        short = [i for i in range(len(audios)) if i not in long]
        results: dict[int, Recognition] = {i: self._transcribe_long(audios[i], favoured[i]) for i in long}
        for group in sub_batches(short, [len(a) for a in audios], self.info.device == "cpu", self.sample_rate):
            batch = self._recognise_batch([audios[i] for i in group], [wanted[i] for i in group],
                                          [favoured[i] for i in group])
            results.update(zip(group, batch, strict=True))
        return [results[i] for i in range(len(audios))]

    def _transcribe_long(self, audio: np.ndarray, boost: WordBoost | None) -> Transcript:
        """Audio too long for full attention (its memory grows with the square of the length), in
        pieces of at most `long_audio_seconds` cut at pauses, one at a time; times on the whole audio.
        (The NeMo backend switches to local attention instead; NeMo's export of it does not trace.)"""
        pieces = []
        for start, end in self._spans(audio):
            piece = self._recognise_batch([audio[start:end]], [1], [boost])[0].transcript().best
            pieces.append(piece.shifted(start / self.sample_rate))
        return Transcript((joined(pieces),))

    def encode(self, audios: Sequence[np.ndarray]) -> int:
        """Featurise and encode as `transcribe` does, without decoding (the bench's compute ceiling);
        the encoder frames made."""
        pieces = [audio[start:end] for audio in audios for start, end in self._spans(audio)]
        frames = 0
        for group in sub_batches(list(range(len(pieces))), [len(p) for p in pieces], self.info.device == "cpu",
                                 self.sample_rate):
            _, lengths = self._encode(*self.log_mel([pieces[i] for i in group]))
            frames += int(lengths.sum())
        return frames

    def _spans(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """Audio within `long_audio_seconds` whole; longer audio in pieces cut at its pauses."""
        return split_at_pauses(audio, self.sample_rate, self._long_audio_s, self._long_audio_s / 2)

    def _recognise_batch(self, audios: Sequence[np.ndarray], wanted: list[int],
                         boosts: list[WordBoost | None]) -> list[Recognition]:
        features, lengths = self.log_mel(audios)
        encoded, encoded_lengths = self._encode(features, lengths)
        if self._head == "ctc":
            log_probs = self.ctc_log_probs(encoded) if self._transducer_dir else encoded
            spans, _ = self.greedy.ctc(log_probs, encoded_lengths)
            return [self._pending(item) for item in spans]
        spans, _ = self.greedy.transducer(encoded, encoded_lengths, trees=self.trees(boosts))
        out: list[Recognition] = []
        for i, item in enumerate(spans):
            recognition: Recognition = self._pending(item)
            if wanted[i] > 1:  # the beam search needs the greedy text
                best = recognition.transcript().best
                extra = self._alternatives(encoded[i, :, : encoded_lengths[i]], best, wanted[i])
                recognition = Transcript((best, *extra))
            out.append(recognition)
        return out

    def trees(self, boosts: Sequence[WordBoost | None]) -> list[PhraseTree | None]:
        if self.booster is None:
            return [None] * len(boosts)
        return [None if b is None else self.booster.tree(b) for b in boosts]

    def _alternatives(self, encoded: np.ndarray, best: Hypothesis, n: int) -> list[Hypothesis]:
        """Other hypotheses from a beam search; the greedy one stays first."""
        greedy = self.greedy
        nbest = beam_search(greedy.joint_step, encoded, self.blank_id, greedy.fresh(), max(n, _MIN_BEAM),
                            greedy.durations, greedy.max_symbols)
        return runners_up(best, [(self.detokenize(tokens), score) for tokens, score in nbest], n)

    def _pending(self, spans: list[TokenSpan]) -> PendingTranscript:
        """One item's greedy tokens, its text and words left to build off the inference thread."""
        return PendingTranscript(spans, self.detokenize, self.frame_shift_s, self.info.timed_ends)

    def warmup(self, shape: WarmupShape | None = None) -> None:
        """Run the path once; on a GPU also a full batch of the usual longest clip (TensorRT builds or loads
        its engine here, for the whole profile, rather than during a request)."""
        self.transcribe(warmup_clips(self.sample_rate))
        if shape is not None and self.info.device == "cuda":
            self.transcribe(warmup_clips(self.sample_rate, shape.clip_s)[:1] * shape.max_batch)

    def streamer(self, left_context_s: float) -> Streamer | None:
        """Cache-aware streaming through the export's streaming encoder graphs; None for a directory
        without them (a community export): its servers answer `Recognize` only. The left context
        was fixed by the export."""
        streaming = self._config.get("streaming")
        if not streaming or not (self.directory / STREAM_ENCODER).is_file():
            return None
        if not math.isclose(float(streaming["left_context_s"]), left_context_s):
            log.info("streaming left context is the export's", extra={
                "exported_s": streaming["left_context_s"], "asked_s": left_context_s})
        from parakeet_serve.engine.onnx.stream_model import OnnxStreamModel

        return Streamer(OnnxStreamModel(self, streaming))

    def gpu_memory(self) -> None:
        return None  # ONNX Runtime does not report its arena

    def detokenize(self, ids: list[int]) -> str:
        return "".join(self._pieces[i] for i in ids).replace(SENTENCEPIECE_WORD_START, " ").strip()

    def _encode(self, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encoder output [batch, dim, frames] and valid frames; a CTC model's graph gives log-probs."""
        if not self._transducer_dir:
            (log_probs,) = self._encoder.run(None, {"audio_signal": features, "length": lengths})
            return log_probs, self._subsampled(lengths)
        encoded, encoded_lengths = self._encoder.run(["outputs", "encoded_lengths"],
                                                     {"audio_signal": features, "length": lengths})
        return encoded, encoded_lengths

    def _subsampled(self, lengths: np.ndarray) -> np.ndarray:
        """Encoder frames from feature frames, through the stride-2 convolutions (kernel 3, padding 1;
        a causal one pads two frames on the left)."""
        out = lengths.copy()
        for _ in range(int(math.log2(self.subsampling))):
            out = out // 2 + 1 if self._causal else (out - 1) // 2 + 1
        return out

    def ctc_log_probs(self, encoded: np.ndarray) -> np.ndarray:
        assert self._ctc_head is not None
        return self._ctc_head.run(None, {"encoder_output": encoded})[0]

    # --- set-up -----------------------------------------------------------------------------

    @property
    def _transducer_dir(self) -> bool:
        return (self.directory / ENCODER).is_file()

    def _pick_head(self, decoder: str, model_type: str) -> str:
        transducer = None
        if (self.directory / DECODER_JOINT).is_file():
            transducer = "tdt" if model_type.endswith("tdt") or self._durations else "rnnt"
        has_ctc = (self.directory / CTC_HEAD).is_file() or (self.directory / CTC_MODEL).is_file()
        return pick_head(decoder, transducer, has_ctc, str(self.directory))

    def session(self, name: str, int8: bool, threads: int = 0, tensorrt: dict[str, str] | None = None) -> Any:
        """An inference session on the engine's providers. TensorRT runs only a graph given its `tensorrt` shape
        profile (the offline encoder): without one it builds an engine again at each new input shape, and the
        decoder's step and the streaming graphs, small calls of many shapes, run on CUDA instead."""
        path = self.directory / (name.replace(".onnx", ".int8.onnx") if int8 else name)
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing; export the model with `parakeet-serve export`.")
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = threads
        # Idle pool threads sleep instead of spinning: spinning ones took the cores from the decoder's
        # many small calls and the server's other threads (RTFx 226 -> 288 in process, demo model, 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return self._ort.InferenceSession(str(path), options, providers=providers_for(self._providers, tensorrt))


def _providers(provider: str, available: Sequence[str], directory: Path) -> list[Any]:
    """Execution providers by preference; TensorRT builds fp16 engines and caches them beside the model."""
    tensorrt = ("TensorrtExecutionProvider", {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                              "trt_engine_cache_path": str(directory / "tensorrt-cache")})
    wanted = {"cpu": [], "cuda": ["CUDAExecutionProvider"], "tensorrt": [tensorrt, "CUDAExecutionProvider"],
              "auto": ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []}[provider]
    names = [p[0] if isinstance(p, tuple) else p for p in wanted]
    missing = [n for n in names if n not in available]
    if missing:
        raise ModelLoadError(f"ONNX Runtime here has no {', '.join(missing)} (it has {', '.join(available)}); "
                             "install onnxruntime-gpu or set PARAKEET_ONNX_PROVIDER=cpu.")
    return [*wanted, "CPUExecutionProvider"]


def tensorrt_profile(n_mels: int, max_frames: int, max_batch: int) -> dict[str, str]:
    """TensorRT's explicit shape range for an encoder graph (`audio_signal` is batch x mels x frames): one
    engine, built once and cached, serves every batch up to `max_batch` of audio up to `max_frames`."""
    def shapes(batch: int, frames: int) -> str:
        return f"audio_signal:{batch}x{n_mels}x{frames},length:{batch}"

    return {"trt_profile_min_shapes": shapes(1, 1), "trt_profile_opt_shapes": shapes(max_batch, max_frames),
            "trt_profile_max_shapes": shapes(max_batch, max_frames)}


def providers_for(providers: Sequence[Any], profile: dict[str, str] | None) -> list[Any]:
    """`providers` for one graph: TensorRT with the graph's shape `profile`, or left out without one."""
    def tensorrt(provider: Any) -> bool:
        return isinstance(provider, tuple) and provider[0] == "TensorrtExecutionProvider"

    return [(p[0], {**p[1], **profile}) if tensorrt(p) else p for p in providers if profile or not tensorrt(p)]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_vocabulary(path: Path) -> tuple[list[str], int]:
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; an ONNX model directory needs vocab.txt.")
    pieces: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            piece, index = line.rsplit(" ", 1)
            pieces[int(index)] = piece
    ordered = [pieces[i] for i in range(len(pieces))]
    if "<blk>" not in ordered:
        raise ModelLoadError(f"{path} has no <blk> entry.")
    blank = ordered.index("<blk>")
    return ordered[:blank], blank
