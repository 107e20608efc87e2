"""Batched recognition with a NeMo ASR model through its tensor-level API.

One call encodes a padded batch once and decodes it with NeMo's batched greedy decoder
(CTC or transducer: RNN-T, TDT, or either head of a hybrid). Word times and confidences come
from the decoder's own per-token frames and probabilities. Not thread-safe: the scheduler
calls it from a single worker thread.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import platform
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, open_dict

from parakeet_serve.engine.base import WarmupShape, pick_head, sub_batches, warmup_clips
from parakeet_serve.engine.features import pad_batch
from parakeet_serve.engine.nemo.boosting import PhraseBooster
from parakeet_serve.engine.nemo.greedy import exact_tdt_durations, transducer_spans
from parakeet_serve.engine.nemo.stream_model import NemoStreamModel
from parakeet_serve.engine.streaming import Streamer
from parakeet_serve.engine.types import (
    Hypothesis,
    ModelInfo,
    Recognition,
    TokenSpan,
    Transcript,
    runners_up,
    transcripts,
)
from parakeet_serve.engine.words import PendingTranscript, group_words, settle_times, token_logprobs
from parakeet_serve.errors import ModelLoadError, SettingsError
from parakeet_serve.word_boost import WordBoost

log = logging.getLogger(__name__)

_CONFIDENCE = {
    "preserve_frame_confidence": True,
    "preserve_token_confidence": True,
    "preserve_word_confidence": False,  # words are grouped here, robustly, from token confidences
    "exclude_blank": True,
    "aggregation": "min",
    "method_cfg": {"name": "max_prob"},
}
_MIN_BEAM = 4
_MIN_SECONDS = 0.25  # shorter audio is padded with silence so the encoder has frames to emit
_Batch = tuple[list[list[int]], contextlib.AbstractContextManager]  # the groups a decoding's items are encoded in


class NemoEngine:
    """Recognises batches of mono float32 audio at `sample_rate`."""

    def __init__(
        self,
        model: Any,
        *,
        model_id: str,
        decoder: str = "auto",
        device: str = "auto",
        precision: str = "auto",
        long_audio_seconds: float = 480.0,
        local_attention_context: int = 128,
        lookahead_ms: float | None = None,
    ) -> None:
        self.device = _pick_device(device)
        self.dtype = _pick_dtype(precision, self.device)
        self.model = _with_weights_in(model.to(self.device).eval(), self.dtype)
        self._long_audio_samples = int(long_audio_seconds * self.sample_rate)
        self._local_context = local_attention_context
        self._head = _pick_head(model, decoder)
        self._beam_decoding: Any = None
        self._configure_featurizer()
        self._configure_decoding()
        lookahead = _serve_lookahead(self.model.encoder, lookahead_ms, self.frame_shift_s)
        # Word boosting needs a transducer's label-looping decoder and a tokenizer to spell phrases; it has a
        # decoder of its own, so batches without a boost run the plain one (no fusion at every step).
        self.booster = (PhraseBooster(model, self._decoding(_biasing(self._greedy_cfg)).decoding)
                        if self._head != "ctc" and hasattr(model, "tokenizer") else None)
        if self._head == "tdt":
            for computer in [self.greedy_computer] + ([self.booster.computer] if self.booster else []):
                exact_tdt_durations(computer, self.device)
        self.info = ModelInfo(
            model_id=model_id,
            architecture=type(model).__name__,
            decoder=self._head,
            device=str(self.device),
            precision=str(self.dtype).removeprefix("torch."),
            sample_rate=self.sample_rate,
            frame_shift_s=self.frame_shift_s,
            supports_alternatives=self._head in ("rnnt", "tdt"),
            extra=lookahead,
        )

    # --- properties ---------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return int(self.model.cfg.sample_rate)

    @property
    def frame_shift_s(self) -> float:
        """Seconds of audio per encoder output frame."""
        stride = float(self.model.cfg.preprocessor.window_stride)
        return stride * int(getattr(self.model.encoder, "subsampling_factor", 1))

    @property
    def ctc_head(self) -> Any:
        return self.model.ctc_decoder if hasattr(self.model, "ctc_decoder") else self.model.decoder

    # --- recognition ----------------------------------------------------------------------

    def transcribe(self, audios: Sequence[np.ndarray], alternatives: Sequence[int] | None = None,
                   boosts: Sequence[WordBoost | None] | None = None) -> list[Transcript]:
        """Recognise each audio (see `recognise`), words and all."""
        return transcripts(self.recognise(audios, alternatives, boosts))

    def recognise(self, audios: Sequence[np.ndarray], alternatives: Sequence[int] | None = None,
                  boosts: Sequence[WordBoost | None] | None = None) -> list[Recognition]:
        """Recognise each audio, leaving greedy words to build off this thread; `alternatives[i]` asks
        for up to that many hypotheses of item i, and `boosts[i]` favours phrases in item i's greedy
        decoding (the other items decode as without)."""
        wanted = list(alternatives) if alternatives is not None else [1] * len(audios)
        favoured = list(boosts) if boosts is not None and self.booster is not None else [None] * len(audios)
        results: list[Recognition | None] = [None] * len(audios)
        for groups, attention in self._plan(audios):
            order = [i for group in groups for i in group]
            with attention:
                batch = self._recognise_batch([[audios[i] for i in group] for group in groups],
                                              [wanted[i] for i in order], [favoured[i] for i in order])
            for i, recognition in zip(order, batch, strict=True):
                results[i] = recognition
        return [r for r in results if r is not None]

    def encode(self, audios: Sequence[np.ndarray]) -> int:
        """Featurise and encode as `transcribe` does, without decoding (the bench's compute ceiling);
        the encoder frames made."""
        frames = 0
        for groups, attention in self._plan(audios):
            with attention, torch.inference_mode(), self.autocast():
                for group in groups:
                    _, lengths = self._encoded([audios[i] for i in group])
                    frames += int(lengths.sum())  # one read per batch: it also waits for the device
        return frames

    def _plan(self, audios: Sequence[np.ndarray]) -> Iterator[_Batch]:
        """The batches a call decodes, each as the groups it is encoded in and with its attention: the
        short items in `sub_batches` decoded together, each long one alone (padding a short item to an
        hour would waste the batch) under local attention."""
        short = [i for i, a in enumerate(audios) if len(a) <= self._long_audio_samples]
        if short:
            on_cpu = self.device.type == "cpu"
            yield sub_batches(short, [len(a) for a in audios], on_cpu, self.sample_rate), contextlib.nullcontext()
        for i, audio in enumerate(audios):
            if len(audio) > self._long_audio_samples:
                yield [[i]], self._local_attention()

    def streamer(self, left_context_s: float) -> Streamer:
        """Cache-aware streaming steps over this model."""
        return Streamer(NemoStreamModel(self, left_context_s))

    def gpu_memory(self) -> tuple[Callable[[], int], Callable[[], int]] | None:
        if self.device.type != "cuda":
            return None
        device = self.device
        return (lambda: torch.cuda.memory_allocated(device)), (lambda: torch.cuda.memory_reserved(device))

    def warmup(self, shape: WarmupShape | None = None) -> None:
        """Run the whole path once so the first request pays no lazy initialisation; on a GPU also at the
        largest `shape`: a full batch of the usual longest clip (the allocator sized for it), and the decoders
        captured for the longest audio (NeMo captures its CUDA graphs again, on the inference thread, at
        each larger batch or longer audio it meets). Then say which decoder NeMo really runs (CUDA graphs
        are chosen at the first decoding, and fall back silently)."""
        self.transcribe(warmup_clips(self.sample_rate))
        if shape is not None and self.device.type == "cuda":
            self.transcribe(warmup_clips(self.sample_rate, shape.clip_s)[:1] * shape.max_batch)
            self.prepare_decoders(shape.max_batch, shape.audio_s)
        self.info.extra["decoding"] = self._decoding_mode()
        log.info("decoder ready", extra={"decoding": self.info.extra["decoding"]})

    def prepare_decoders(self, batch: int, seconds: float) -> None:
        """Run each transducer decoder (plain and boosting) once on `batch` silent items of `seconds`: NeMo
        sizes its buffers and CUDA graphs to the largest input it has met and keeps them for smaller ones."""
        if self._head == "ctc":
            return
        with torch.inference_mode(), self.autocast():
            encoded, _ = self._encoded(warmup_clips(self.sample_rate, _MIN_SECONDS)[:1])
            frames = math.ceil(seconds / self.frame_shift_s)
            zeros = encoded.new_zeros(batch, encoded.shape[1], frames)
            lengths = torch.full((batch,), frames, device=encoded.device)
            unboosted = torch.full((batch,), -1, device=encoded.device)
            decoders = [(self.greedy_computer, None)] + ([(self.booster.computer, unboosted)] if self.booster else [])
            for computer, ids in decoders:
                transducer_spans(computer, zeros, lengths, self.piece, [0] * batch, boost_ids=ids)

    def _decoding_mode(self) -> str:
        if self._head == "ctc":
            return "ctc greedy_batch"
        computer = self.greedy_computer
        graphs = getattr(computer, "cuda_graphs_mode", None) if self.device.type == "cuda" else None
        return f"{type(computer).__name__}, cuda_graphs={graphs or 'off'}"

    def _recognise_batch(self, groups: Sequence[Sequence[np.ndarray]], wanted: Sequence[int],
                         boosts: Sequence[WordBoost | None]) -> list[Recognition]:
        """The groups' items in order, each group encoded on its own and all decoded together."""
        with torch.inference_mode(), self.autocast():
            encoded, encoded_lengths = self._encoded_groups(groups)
            best = self._decode_greedy(encoded, encoded_lengths, boosts)
            out: list[Recognition] = []
            for i, recognition in enumerate(best):
                if wanted[i] > 1 and self.info.supports_alternatives:  # the beam search needs the greedy text
                    hyp = recognition.transcript().best
                    extra = self._alternatives(encoded[i : i + 1], encoded_lengths[i : i + 1], hyp, wanted[i])
                    recognition = Transcript((hyp, *extra))
                out.append(recognition)
        return out

    def _encoded_groups(self, groups: Sequence[Sequence[np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The groups encoded one by one, each padded only to its own longest item, then joined for one
        decoding: a greedy decoder's step on a CPU costs about as much for 16 items as for 32, and the
        decoding of a group runs as many steps as its longest item needs."""
        parts = [self._encoded(group) for group in groups]
        if len(parts) == 1:
            return parts[0]
        frames = max(int(encoded.shape[-1]) for encoded, _ in parts)
        padded = [torch.nn.functional.pad(encoded, (0, frames - int(encoded.shape[-1]))) for encoded, _ in parts]
        return torch.cat(padded), torch.cat([lengths for _, lengths in parts])

    def _encoded(self, audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output (batch, dim, frames) and valid frames of a padded batch."""
        signal, lengths = _pad(audios, self.device, min_samples=int(self.sample_rate * _MIN_SECONDS))
        features, feature_lengths = self.model.preprocessor(input_signal=signal, length=lengths)
        return self.model.encoder(audio_signal=features, length=feature_lengths)

    def _decode_greedy(self, encoded: torch.Tensor, lengths: torch.Tensor,
                       boosts: Sequence[WordBoost | None]) -> list[Recognition]:
        """Each item's greedy recognition; a transducer's through NeMo's label-looping computer, each
        item with its own boosting model (unboosted ones decode as without), its words still to build."""
        if self._head == "ctc":
            log_probs = self.ctc_head(encoder_output=encoded)
            hyps = self._ctc_decoding.ctc_decoder_predictions_tensor(log_probs, decoder_lengths=lengths,
                                                                     return_hypotheses=True)
            return [Transcript((self._ctc_hypothesis(h),)) for h in hyps]
        if self.booster is None or not any(boosts):
            spans, _ = transducer_spans(self.greedy_computer, encoded, lengths, self.piece, [0] * len(boosts))
        else:
            ids = torch.tensor(self.booster.acquire(boosts), device=encoded.device)
            try:
                spans, _ = transducer_spans(self.booster.computer, encoded, lengths, self.piece, [0] * len(boosts),
                                            boost_ids=ids)
            finally:
                self.booster.release(boosts)
        return [PendingTranscript(s, self.detokenize, self.frame_shift_s, self.info.timed_ends) for s in spans]

    @property
    def greedy_computer(self) -> Any:
        """NeMo's label-looping computer for unboosted transducer decoding."""
        return self.model.decoding.decoding.decoding_computer

    def _alternatives(self, encoded: torch.Tensor, lengths: torch.Tensor, best: Hypothesis, n: int) -> list[Hypothesis]:
        """Other hypotheses from a transducer beam search; the greedy one stays first."""
        decoding = self._beam(n)
        nbest = decoding.rnnt_decoder_predictions_tensor(
            encoder_output=encoded, encoded_lengths=lengths, return_hypotheses=True
        )[0]
        return runners_up(best, [((h.text or "").strip(), float(h.score)) for h in nbest], n)

    def _beam(self, n: int) -> Any:
        size = max(n, _MIN_BEAM)
        if self._beam_decoding is None or self._beam_decoding.cfg.beam.beam_size < size:
            cfg = copy.deepcopy(self.model.cfg.decoding)
            with open_dict(cfg):
                cfg.strategy = "malsd_batch"
                cfg.compute_timestamps = False
                cfg.confidence_cfg = {"preserve_frame_confidence": False}
                cfg.beam = {"beam_size": size, "return_best_hypothesis": False, "score_norm": True}
            self._beam_decoding = self._decoding(cfg)
        return self._beam_decoding

    def _decoding(self, cfg: DictConfig) -> Any:
        """A transducer decoding of this model's networks, apart from the one the model holds."""
        source = {"tokenizer": self.model.tokenizer} if hasattr(self.model, "tokenizer") else {
            "vocabulary": self.model.joint.vocabulary
        }
        return type(self.model.decoding)(decoding_cfg=cfg, decoder=self.model.decoder, joint=self.model.joint,
                                         **source)

    # --- hypotheses -> plain data -----------------------------------------------------------

    def _ctc_hypothesis(self, hyp: Any) -> Hypothesis:
        """NeMo's CTC hypothesis with its character offsets as plain data."""
        ids = self._token_ids(hyp)
        offsets = hyp.timestamp.get("char", []) if isinstance(hyp.timestamp, dict) else []
        confidences = [float(c) for c in (hyp.token_confidence or [])]
        text = (hyp.text or "").strip()
        if not (len(ids) == len(offsets) == len(confidences)):
            log.warning("token timing mismatch; words omitted", extra={"tokens": len(ids), "offsets": len(offsets)})
            return Hypothesis(text=text, confidence=_mean(confidences))
        spans = [
            TokenSpan(tid, self.piece(tid), int(o["start_offset"]), int(o["end_offset"]), c)
            for tid, o, c in zip(ids, offsets, confidences, strict=True)
        ]
        words = settle_times(group_words(spans, self.detokenize, self.frame_shift_s), self.frame_shift_s)
        tokens = token_logprobs(spans, self.frame_shift_s)
        return Hypothesis(text=text, confidence=_mean(confidences), words=tuple(words), tokens=tokens)

    def _token_ids(self, hyp: Any) -> list[int]:
        seq = hyp.y_sequence.tolist() if isinstance(hyp.y_sequence, torch.Tensor) else list(hyp.y_sequence)
        ids, previous = [], None
        for t in seq:  # CTC greedy keeps one label per frame: collapse repeats, drop blanks
            if t != previous and t != self.blank_id:
                ids.append(t)
            previous = t
        return ids

    def piece(self, token_id: int) -> str:
        return self._pieces[token_id]

    def detokenize(self, ids: list[int]) -> str:
        if hasattr(self.model, "tokenizer"):
            return self.model.tokenizer.ids_to_text(ids)
        return "".join(self._vocabulary[i] for i in ids)

    # --- set-up -------------------------------------------------------------------------------

    def _configure_featurizer(self) -> None:
        featurizer = self.model.preprocessor.featurizer
        featurizer.dither = 0.0  # deterministic features: the same audio gives the same words
        featurizer.pad_to = 0

    def _configure_decoding(self) -> None:
        if self._head == "ctc":
            key = "aux_ctc" if hasattr(self.model, "ctc_decoder") else None
            cfg = copy.deepcopy(self.model.cfg[key].decoding if key else self.model.cfg.decoding)
            _set_greedy(cfg, "ctc")
            self._change_decoding(cfg, "ctc")
            self._ctc_decoding = self.model.ctc_decoding if key else self.model.decoding
            self._vocabulary = list(getattr(self.model.decoder, "vocabulary", []))
            self.blank_id = int(self._ctc_decoding.blank_id)
        else:
            cfg = copy.deepcopy(self.model.cfg.decoding)
            _set_greedy(cfg, "rnnt")
            self._change_decoding(cfg, "rnnt")
            self._greedy_cfg = cfg
            self._vocabulary = list(getattr(self.model.joint, "vocabulary", []))
            self.blank_id = int(self.model.decoding.blank_id)
        self._pieces = self._piece_table()

    def _piece_table(self) -> list[str]:
        """Each token's piece, read once: the tokenizer's lookup costs 2.5 us a call, and decoding
        asks it for every token, on the inference thread (issue 19)."""
        if hasattr(self.model, "tokenizer"):
            tokenizer = self.model.tokenizer
            return list(tokenizer.ids_to_tokens(list(range(tokenizer.vocab_size))))
        return self._vocabulary

    def _change_decoding(self, cfg: DictConfig, head: str) -> None:
        if hasattr(self.model, "ctc_decoder"):  # hybrid: choose the head as well
            self.model.change_decoding_strategy(cfg, decoder_type=head, verbose=False)
        else:
            self.model.change_decoding_strategy(cfg, verbose=False)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype != torch.float32:
            with torch.autocast(self.device.type, dtype=self.dtype):
                yield
        else:
            yield

    @contextlib.contextmanager
    def _local_attention(self) -> Iterator[None]:
        """Limited-context attention for audio too long for full attention (memory then grows linearly).

        NeMo's subsampling already splits its convolution when a tensor would pass 2**31 elements."""
        encoder = self.model.encoder
        if not hasattr(encoder, "change_attention_model"):
            yield
            return
        original = (encoder.self_attention_model, list(encoder.att_context_size))
        ctx = [self._local_context, self._local_context]
        encoder.change_attention_model("rel_pos_local_attn", ctx, update_config=False, device=self.device)
        self._settle(encoder)
        try:
            yield
        finally:
            encoder.change_attention_model(original[0], original[1], update_config=False, device=self.device)
            self._settle(encoder)

    def _settle(self, encoder: Any) -> None:
        """Swapped-in attention modules are born in training mode (dropout on) and in fp32."""
        encoder.eval()
        _with_weights_in(self.model, self.dtype)


def _set_greedy(cfg: DictConfig, head: str) -> None:
    with open_dict(cfg):
        cfg.strategy = "greedy_batch"
        if head != "ctc":
            cfg.greedy.loop_labels = True
            cfg.greedy.enable_per_stream_biasing = False
        # CTC's words come from NeMo's character offsets; a transducer's from the computer's own
        # alignment (`greedy`), which keeps a TDT's durations only with timestamps on.
        cfg.compute_timestamps = True
        cfg[f"{head}_timestamp_type"] = "char"
        cfg.confidence_cfg = dict(_CONFIDENCE)


def _biasing(cfg: DictConfig) -> DictConfig:
    """The greedy decoding `cfg` with per-item phrase boosting (unboosted items in its batches decode as without)."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.greedy.enable_per_stream_biasing = True
    return cfg


def _serve_lookahead(encoder: Any, lookahead_ms: float | None, frame_s: float) -> dict[str, str]:
    """Set the look-ahead asked for among those a cache-aware model was trained with (NeMo's
    `att_context_size` list: [left, right] encoder frames each); what is served, for the config RPC."""
    if getattr(encoder, "att_context_style", "regular") != "chunked_limited":
        if lookahead_ms is not None:
            raise ModelLoadError("lookahead_ms applies only to models trained for cache-aware streaming "
                                 "(chunked attention); this one was trained with full attention.")
        return {}

    def ms(context: list[int]) -> float:
        return round(context[1] * frame_s * 1000, 3)

    trained = [list(c) for c in encoder.att_context_size_all]
    if lookahead_ms is not None:
        wanted = [c for c in trained if math.isclose(ms(c), lookahead_ms)]
        if not wanted:
            raise ModelLoadError(f"lookahead_ms={lookahead_ms:g} is not one this model was trained with: "
                                 f"{', '.join(f'{ms(c):g}' for c in trained)} ms.")
        encoder.set_default_att_context_size(wanted[0])
    served = list(encoder.att_context_size)
    return {"lookahead_ms": f"{ms(served):g}", "lookaheads_ms": ",".join(f"{ms(c):g}" for c in trained),
            "att_context_size": f"{served[0]},{served[1]}"}


def _pick_head(model: Any, decoder: str) -> str:
    transducer = None
    if hasattr(model, "joint"):
        transducer = "tdt" if str(model.cfg.decoding.get("model_type", "rnnt")) == "tdt" else "rnnt"
    return pick_head(decoder, transducer, hasattr(model, "ctc_decoder") or transducer is None, "the model")


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device=cuda but no CUDA device is visible")
    return torch.device(device)


def _pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        if precision == "fp16":  # CPUs have no fast fp16 arithmetic; refusing beats silently running fp32
            raise SettingsError("fp16 precision needs a CUDA device; use bf16 or fp32 on a CPU.")
        if precision != "bf16":
            return torch.float32
        if not _cpu_has_bf16():
            log.warning("bf16 was asked for on a CPU without bf16 instructions (AVX512-BF16 or AMX): it runs, "
                        "slower than fp32 (4x on an AVX2-only CPU, issue 19)",
                        extra={"cpu": torch.backends.cpu.get_cpu_capability()})
        return torch.bfloat16
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def _cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively; oneDNN's own check also passes plain AVX-512,
    where bf16 is emulated."""
    if platform.machine() in ("x86_64", "AMD64"):
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe()) if probe is not None else True  # unknown: say nothing


def _with_weights_in(model: Any, dtype: torch.dtype) -> Any:
    """In bf16, the networks are stored in it, as the Open ASR leaderboard runs Parakeet: autocast
    then has no weight to cast at each operation, half the memory holds them, and a CPU without
    bf16 instructions runs the transducer's LSTM (which under autocast alone it cannot: oneDNN
    refuses fp32 weights with a bf16 input there). The featuriser stays fp32 (its window and
    filterbank need the precision), and autocast still runs normalisations and softmax in fp32.
    fp16 weights stay fp32: its narrow range could overflow where autocast keeps fp32."""
    if dtype == torch.bfloat16:
        for name in ("encoder", "decoder", "joint", "ctc_decoder"):
            if isinstance(getattr(model, name, None), torch.nn.Module):
                getattr(model, name).to(dtype)
    return model


def _pad(
    audios: Sequence[np.ndarray], device: torch.device, min_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    signal, lengths = pad_batch(audios, min_samples)
    return torch.from_numpy(signal).to(device, non_blocking=True), torch.from_numpy(lengths).to(device)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0
