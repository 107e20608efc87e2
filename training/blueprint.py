"""Parakeet-family models built from a configuration, with random weights.

The same FastConformer encoder (8x depthwise-striding subsampling) with a CTC, RNN-T, TDT or
hybrid transducer+CTC head, at any size: tiny ones for tests, Parakeet-sized ones for GPU
benchmarks (the compute of the real model, not its text), and the start of the demo model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sentencepiece as spm
import torch
from omegaconf import OmegaConf

Head = Literal["ctc", "rnnt", "tdt", "hybrid_rnnt_ctc", "hybrid_tdt_ctc"]

TDT_DURATIONS = (0, 1, 2, 3, 4)
# The recipe's losses (training.train), written into the model's config as it trains them: the label
# logits' under-normalisation as Parakeet's TDT models have it, no RNN-T loss mixed in (omega), and
# the CTC head's share of the hybrid loss.
TDT_SIGMA = 0.02
CTC_WEIGHT = 0.5

# Sentences for a tokenizer when no corpus is given: enough to learn common English pieces.
_DEFAULT_TEXT = (
    "please call the front desk at nine thirty tomorrow morning",
    "what is the weather like in the city today",
    "set a timer for twenty five minutes and remind me to check the oven",
    "my account number is four seven two one eight",
    "can you book a table for two people on friday evening",
    "the meeting moved to quarter past three in the small conference room",
    "send the invoice for one hundred and twelve dollars to the finance team",
    "turn off the lights in the kitchen and lock the back door",
    "how many days are left until the end of the month",
    "yes that works for me thank you very much",
)


@dataclass(frozen=True)
class Blueprint:
    """The shape of a model: head type and sizes."""

    head: Head = "hybrid_tdt_ctc"
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    ff_expansion: int = 4
    conv_kernel: int = 9
    subsampling_channels: int = 64
    pred_hidden: int = 64
    joint_hidden: int = 64
    vocab_size: int = 64
    n_mels: int = 80
    sample_rate: int = 16000
    # [left, right] encoder frames; several pairs (a streaming model) train every look-ahead, as
    # NVIDIA's multi-look-ahead FastConformers are, and serve the one chosen (the first by default)
    att_context: tuple[int, int] | tuple[tuple[int, int], ...] = (-1, -1)
    # Cache-aware streaming: chunked attention within `att_context`, causal convolutions and no
    # whole-utterance feature normalisation, so a stream encodes each frame once and gets the
    # same output as the whole audio encoded at once.
    streaming: bool = False
    spec_augment: bool = False  # masks on the features while training
    dropout: float = 0.1


def train_tokenizer(out_dir: Path, vocab_size: int, texts: Iterable[str] = _DEFAULT_TEXT) -> Path:
    """Train a SentencePiece BPE tokenizer into `out_dir` (tokenizer.model + vocab.txt)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)),
        model_prefix=str(out_dir / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_file=str(out_dir / "tokenizer.model"))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    (out_dir / "vocab.txt").write_text("\n".join(pieces) + "\n")
    return out_dir


def validation_data(sample_rate: int) -> dict[str, Any]:
    """The `validation_ds` section NeMo's own `transcribe()` needs; no manifest (nothing trains here)."""
    return {"manifest_filepath": None, "sample_rate": sample_rate, "batch_size": 16, "shuffle": False,
            "use_start_end_token": False}


def model_config(bp: Blueprint, tokenizer_dir: Path) -> dict[str, Any]:
    """A NeMo model config (the `model:` section of a training YAML) for `bp`."""
    cfg: dict[str, Any] = {
        "sample_rate": bp.sample_rate,
        "tokenizer": {"dir": str(tokenizer_dir), "type": "bpe"},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": bp.sample_rate, "normalize": "NA" if bp.streaming else "per_feature", "window_size": 0.025,
            "window_stride": 0.01, "window": "hann", "features": bp.n_mels, "n_fft": 512,
            "log": True, "frame_splicing": 1, "dither": 0.0, "pad_to": 0, "pad_value": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": bp.n_mels, "feat_out": -1, "n_layers": bp.n_layers, "d_model": bp.d_model,
            "subsampling": "dw_striding", "subsampling_factor": 8,
            "subsampling_conv_channels": bp.subsampling_channels, "causal_downsampling": bp.streaming,
            "ff_expansion_factor": bp.ff_expansion, "self_attention_model": "rel_pos",
            "n_heads": bp.n_heads, "att_context_size": _att_context_size(bp.att_context), "xscaling": True,
            "att_context_style": "chunked_limited" if bp.streaming else "regular",
            "conv_context_size": "causal" if bp.streaming else None,
            "untie_biases": True, "pos_emb_max_len": 5000, "conv_kernel_size": bp.conv_kernel,
            "conv_norm_type": "batch_norm", "dropout": bp.dropout, "dropout_pre_encoder": bp.dropout,
            "dropout_emb": 0.0, "dropout_att": bp.dropout,
        },
        "optim": {"name": "adamw", "lr": 1e-3},
        **({"spec_augment": {
            "_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
            "freq_masks": 2, "time_masks": 4, "freq_width": 15, "time_width": 0.05,
        }} if bp.spec_augment else {}),
        "train_ds": None,
        # NeMo's transcribe() reads its data-loader settings from here (and fails on None)
        "validation_ds": validation_data(bp.sample_rate),
        "model_defaults": {"enc_hidden": bp.d_model, "pred_hidden": bp.pred_hidden, "joint_hidden": bp.joint_hidden},
    }
    ctc_decoder = {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": bp.d_model,
                   "num_classes": -1, "vocabulary": []}
    if bp.head == "ctc":
        cfg["decoder"] = ctc_decoder
        cfg["decoding"] = {"strategy": "greedy_batch"}
        return cfg
    cfg["decoder"] = {
        "_target_": "nemo.collections.asr.modules.RNNTDecoder", "normalization_mode": None,
        "random_state_sampling": False, "blank_as_pad": True,
        "prednet": {"pred_hidden": bp.pred_hidden, "pred_rnn_layers": 1, "t_max": None, "dropout": 0.0},
    }
    cfg["joint"] = {
        "_target_": "nemo.collections.asr.modules.RNNTJoint", "log_softmax": None, "preserve_memory": False,
        "fuse_loss_wer": False,
        "jointnet": {"joint_hidden": bp.joint_hidden, "activation": "relu", "dropout": bp.dropout},
    }
    cfg["decoding"] = {"strategy": "greedy_batch", "greedy": {"max_symbols": 10}}
    cfg["loss"] = {"loss_name": "default"}
    if bp.head in ("tdt", "hybrid_tdt_ctc"):
        durations = list(TDT_DURATIONS)
        cfg["joint"]["num_extra_outputs"] = len(durations)
        cfg["decoding"].update({"model_type": "tdt", "durations": durations})
        cfg["loss"] = {"loss_name": "tdt", "tdt_kwargs": {"durations": durations, "sigma": TDT_SIGMA, "omega": 0.0}}
        cfg["model_defaults"]["tdt_durations"] = durations
    if bp.head.startswith("hybrid"):
        cfg["aux_ctc"] = {
            "ctc_loss_weight": CTC_WEIGHT, "use_cer": False, "ctc_reduction": "mean_batch",
            "decoder": {**ctc_decoder, "feat_in": None}, "decoding": {"strategy": "greedy_batch"},
        }
    return cfg


def _att_context_size(context: tuple[int, int] | tuple[tuple[int, int], ...]) -> list:
    """NeMo's `att_context_size`: one [left, right] pair, or a list of them."""
    if isinstance(context[0], int):
        return list(context)
    return [list(pair) for pair in context]  # type: ignore[arg-type]


def build_model(bp: Blueprint, tokenizer_dir: Path, seed: int = 0) -> Any:
    """A randomly initialised NeMo model of shape `bp`, in eval mode on the CPU."""
    from nemo.collections.asr.models import (
        EncDecCTCModelBPE,
        EncDecHybridRNNTCTCBPEModel,
        EncDecRNNTBPEModel,
    )

    cls = {"ctc": EncDecCTCModelBPE, "rnnt": EncDecRNNTBPEModel, "tdt": EncDecRNNTBPEModel}.get(
        bp.head, EncDecHybridRNNTCTCBPEModel
    )
    torch.manual_seed(seed)
    return cls(cfg=OmegaConf.create(model_config(bp, tokenizer_dir))).eval()
