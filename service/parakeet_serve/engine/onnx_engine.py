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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parakeet_serve.audio.pauses import split_at_pauses
from parakeet_serve.boosting import WordBoost
from parakeet_serve.engine.base import WarmupShape, sub_batches, warmup_clips
from parakeet_serve.engine.beam import beam_search
from parakeet_serve.engine.export import CTC_HEAD, CTC_MODEL, DECODER_JOINT, ENCODER, STREAM_ENCODER, TOKENIZER
from parakeet_serve.engine.features import FeatureConfig, LogMel
from parakeet_serve.engine.phrase_tree import PhraseTree, TreeBooster
from parakeet_serve.engine.streaming import Streamer
from parakeet_serve.engine.types import Hypothesis, ModelInfo, Recognition, Transcript, joined, runners_up, transcripts
from parakeet_serve.engine.words import SENTENCEPIECE_WORD_START, PendingTranscript, TokenSpan
from parakeet_serve.errors import ModelLoadError

log = logging.getLogger(__name__)

_CONFIDENCE_ALPHA = 0.33  # NeMo's max_prob confidence, as the NeMo engine is configured
_MIN_BEAM = 4  # as the NeMo engine's beam for alternatives


@dataclass
class DecoderState:
    """Where one item's greedy transducer decoding stands between calls (a stream's chunks)."""

    last: int  # the last label emitted (the blank before any)
    h: np.ndarray  # the prediction network's state: (layers, hidden) each
    c: np.ndarray
    skip: int = 0  # frames a TDT duration jumped past the end of the frames decoded so far
    node: int = 0  # where its phrase boosting stands (`PhraseTree` node)


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
        self._max_symbols = int(config.get("max_tokens_per_step", 10))
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
        self._decoder = self.session(DECODER_JOINT, int8, threads=1) if self._head != "ctc" else None
        # A CTC model's own graph gives log-probs; its head alone (hybrids, and streaming) takes encoder output.
        ctc_head = self._head == "ctc" and (directory / CTC_HEAD).is_file()
        self._ctc_head = self.session(CTC_HEAD, False) if ctc_head else None
        if self._decoder is not None:
            state = {i.name: i.shape for i in self._decoder.get_inputs()}["input_states_1"]
            self._state_shape = (int(state[0]), int(state[2]))
        # Boosting spells phrases with the export's SentencePiece model, and needs a transducer.
        tokenizer = directory / TOKENIZER
        self.booster = TreeBooster(tokenizer, len(self._pieces)) if self._decoder and tokenizer.is_file() else None
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
            spans, _ = self.decode_ctc(log_probs, encoded_lengths)
            return [self._pending(item) for item in spans]
        spans, _ = self.decode_transducer(encoded, encoded_lengths, trees=self.trees(boosts))
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
        layers, hidden = self._state_shape
        fresh = np.zeros((layers, hidden), np.float32)
        nbest = beam_search(self._joint_step, encoded, self.blank_id, (fresh, fresh), max(n, _MIN_BEAM),
                            self._durations, self._max_symbols)
        return runners_up(best, [(self.detokenize(tokens), score) for tokens, score in nbest], n)

    def _joint(self, frames: np.ndarray, last: np.ndarray, h: np.ndarray,
               c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The joint's scores (n, tokens + blank + a TDT's durations) after `last` on each encoder frame
        (n, dim), and the prediction network's state after `last`."""
        assert self._decoder is not None
        logits, _, h_next, c_next = self._decoder.run(None, {
            "encoder_outputs": frames[:, :, None], "targets": last[:, None],
            "target_length": np.ones(len(last), np.int32), "input_states_1": h, "input_states_2": c})
        return logits.reshape(len(last), -1), h_next, c_next

    def _joint_step(self, frames: np.ndarray, last: np.ndarray, h: np.ndarray,
                    c: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """Log-probabilities of the tokens (and a TDT's durations) after `last` on each encoder frame."""
        logits, h_next, c_next = self._joint(frames, last, h, c)
        vocabulary = len(self._pieces) + 1
        durations = _log_softmax(logits[:, vocabulary:]) if self._durations else None
        return _log_softmax(logits[:, :vocabulary]), durations, h_next, c_next

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
        from parakeet_serve.engine.onnx_streaming import OnnxStreamModel

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

    def decode_ctc(self, log_probs: np.ndarray, lengths: np.ndarray, previous: Sequence[int] | None = None,
                   offsets: Sequence[int] | None = None) -> tuple[list[list[TokenSpan]], list[int]]:
        """Greedy CTC: each item's tokens (frames from `offsets[i]`) and its last label; `previous[i]`,
        the label before its first frame, collapses a repeat across a stream's chunks."""
        labels, best = log_probs.argmax(axis=-1), log_probs.max(axis=-1)
        out, lasts = [], []
        for row in range(len(labels)):
            spans, before = [], -1 if previous is None else previous[row]
            offset = 0 if offsets is None else offsets[row]
            for t in range(int(lengths[row])):
                label = int(labels[row, t])
                if label != self.blank_id and label != before:
                    spans.append(self._span(label, offset + t, offset + t + 1, math.exp(float(best[row, t]))))
                before = label
            out.append(spans)
            lasts.append(before)
        return out, lasts

    def decode_transducer(self, encoded: np.ndarray, lengths: np.ndarray,
                          states: Sequence[DecoderState | None] | None = None, offsets: Sequence[int] | None = None,
                          trees: Sequence[PhraseTree | None] | None = None,
                          ) -> tuple[list[list[TokenSpan]], list[DecoderState]]:
        """Greedy label looping for the whole batch: each call advances every unfinished item by one
        token or blank; the decoder's state changes only where a token was emitted. Items continue
        from `states` (a stream's previous chunks; None: afresh) with frames from `offsets`; an item
        with a phrase tree picks its tokens with the tree's gains (whether it emits one, without)."""
        batch, vocabulary = len(encoded), len(self._pieces)
        assert self._decoder is not None
        layers, hidden = self._state_shape
        starts = [s or DecoderState(self.blank_id, np.zeros((layers, hidden), np.float32),
                                    np.zeros((layers, hidden), np.float32)) for s in (states or [None] * batch)]
        t, symbols = np.array([s.skip for s in starts], np.int64), np.zeros(batch, np.int64)
        last = np.array([s.last for s in starts], np.int32)  # the blank is the start symbol
        h, c = np.stack([s.h for s in starts], axis=1), np.stack([s.c for s in starts], axis=1)
        shift = np.zeros(batch, np.int64) if offsets is None else np.asarray(offsets, np.int64)
        nodes, boosted = [s.node for s in starts], [i for i, tree in enumerate(trees or []) if tree is not None]
        out: list[list[TokenSpan]] = [[] for _ in range(batch)]
        while (active := np.flatnonzero(t < lengths)).size:
            logits, h_next, c_next = self._joint(encoded[active, :, t[active]], last[active], h[:, active],
                                                 c[:, active])
            token_logits = logits[:, : vocabulary + 1]  # the pieces and the blank; a TDT's durations follow
            tokens = token_logits.argmax(axis=-1)
            steps = (np.array(self._durations)[logits[:, vocabulary + 1 :].argmax(axis=-1)] if self._durations
                     else np.ones(active.size, np.int64))
            emitted = tokens != self.blank_id
            if boosted:
                self._boost(tokens, token_logits, active, emitted, trees, nodes)  # type: ignore[arg-type]
            probability = 1.0 / np.exp(token_logits - token_logits.max(axis=-1, keepdims=True)).sum(axis=-1)
            for j in np.flatnonzero(emitted):
                item = active[j]
                start = int(t[item] + shift[item])
                out[item].append(self._span(int(tokens[j]), start, start + int(max(steps[j], 1)),
                                            float(probability[j])))
            changed = active[emitted]
            last[changed] = tokens[emitted]
            h[:, changed], c[:, changed] = h_next[:, emitted], c_next[:, emitted]
            symbols[changed] += 1
            # RNN-T stays on a frame after a token, TDT moves by the predicted duration; a blank, or the
            # most tokens one frame may emit, moves at least one frame on.
            full = symbols[active] >= self._max_symbols
            if self._durations:
                move = np.where(emitted & ~full, steps, np.maximum(steps, 1))
            else:
                move = np.where(emitted & ~full, 0, 1)
            t[active] += move
            symbols[active[move > 0]] = 0
        ends = [DecoderState(int(last[i]), h[:, i].copy(), c[:, i].copy(), int(t[i] - lengths[i]), nodes[i])
                for i in range(batch)]
        return out, ends

    @staticmethod
    def _boost(tokens: np.ndarray, logits: np.ndarray, active: np.ndarray, emitted: np.ndarray,
               trees: Sequence[PhraseTree | None], nodes: list[int]) -> None:
        """Re-pick the emitted tokens of boosted items with their trees' gains, and move their nodes on."""
        for j in np.flatnonzero(emitted):
            item = int(active[j])
            tree = trees[item]
            if tree is not None:
                tokens[j] = int(np.argmax(logits[j, :-1] + tree.bias(nodes[item])))
                nodes[item] = tree.next(nodes[item], int(tokens[j]))

    # --- hypotheses ------------------------------------------------------------------------

    def _span(self, token_id: int, start: int, end: int, probability: float) -> TokenSpan:
        return TokenSpan(token_id, self._pieces[token_id], start, end, self._confidence(probability))

    def _confidence(self, probability: float) -> float:
        """NeMo's `max_prob` confidence with Tsallis entropy's alpha: 0 for a uniform guess, 1 for certainty."""
        scale = (len(self._pieces) + 1) ** _CONFIDENCE_ALPHA
        return (probability**_CONFIDENCE_ALPHA * scale - 1) / (scale - 1)

    # --- set-up -----------------------------------------------------------------------------

    @property
    def _transducer_dir(self) -> bool:
        return (self.directory / ENCODER).is_file()

    def _pick_head(self, decoder: str, model_type: str) -> str:
        transducer = (self.directory / DECODER_JOINT).is_file()
        has_ctc = (self.directory / CTC_HEAD).is_file() or (self.directory / CTC_MODEL).is_file()
        kind = "tdt" if model_type.endswith("tdt") or self._durations else "rnnt"
        if decoder == "ctc":
            if not has_ctc:
                raise ModelLoadError(f"decoder=ctc but {self.directory} has no CTC graph ({CTC_HEAD} or {CTC_MODEL})")
            return "ctc"
        if not transducer:
            if decoder in ("rnnt", "tdt"):
                raise ModelLoadError(f"decoder={decoder} but {self.directory} holds a CTC model")
            return "ctc"
        if decoder == "tdt" and kind != "tdt":
            raise ModelLoadError("decoder=tdt but the exported transducer is RNN-T")
        return kind

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


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


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
