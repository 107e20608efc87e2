"""Parakeet-sized models with random weights, for GPU benchmarks: the compute of the real models.

    PYTHONPATH=. python loadtest/gpu/build_models.py --out /tmp/parakeet-random [--sizes 0.6b 1.1b]

Shapes follow the published Parakeet TDT checkpoints: FastConformer, d_model 1024, 8x
depthwise-striding subsampling, 24 (0.6B) or 42 (1.1B) layers, a TDT decoder and joint of 640,
1024 BPE tokens. Their transcripts are noise; their speed, memory and batching are the real ones.

A random joint emits a token on almost every frame (twice a trained model's rate: the blank never
wins), which makes greedy decoding cost more than it would. So the joint is calibrated on evaluation
speech: token scores re-centred, TDT durations given a plausible prior, and a blank offset found by
bisection so that about `TOKENS_PER_FRAME` tokens come per encoder frame, in the serving precision.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from parakeet_serve.engine.loader import quiet_nemo
from training.blueprint import Blueprint, build_model, train_tokenizer
from training.text import unique_sentences

SIZES = {
    "0.6b": Blueprint(head="tdt", n_layers=24, d_model=1024, n_heads=8, conv_kernel=9, subsampling_channels=256,
                      pred_hidden=640, joint_hidden=640, vocab_size=1024, dropout=0.0),
    "1.1b": Blueprint(head="tdt", n_layers=42, d_model=1024, n_heads=8, conv_kernel=9, subsampling_channels=256,
                      pred_hidden=640, joint_hidden=640, vocab_size=1024, dropout=0.0),
}


TOKENS_PER_FRAME = 0.3  # about a trained Parakeet's rate on speech at 80 ms frames
DURATION_PRIOR = (0.05, 0.45, 0.3, 0.15, 0.05)  # TDT durations 0-4: mostly one to three frames


def build(out: Path, size: str, audios: list[np.ndarray]) -> Path:
    quiet_nemo()
    tokenizer = train_tokenizer(out / "tokenizer", SIZES[size].vocab_size, unique_sentences(0, 5000))
    model = build_model(SIZES[size], tokenizer)
    rate = calibrate(model, audios)
    path = out / f"parakeet-{size}-random.nemo"
    model.save_to(str(path))
    params = sum(p.numel() for p in model.parameters())
    print(f"{path}: {params / 1e6:.0f} M parameters, {rate:.3f} tokens per frame")
    return path


def calibrate(model: Any, audios: list[np.ndarray], target: float = TOKENS_PER_FRAME) -> float:
    """Set the joint's output biases so that greedy decoding emits about `target` tokens per encoder
    frame on `audios`; the rate reached."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    out = model.joint.joint_net[-1]  # the last linear layer: token scores, the blank, then TDT durations
    blank = model.joint.num_classes_with_blank - 1
    durations = out.out_features - blank - 1
    precision = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    lengths = torch.tensor([len(a) for a in audios], device=device)
    signal = torch.zeros(len(audios), int(lengths.max()), device=device)
    for i, audio in enumerate(audios):
        signal[i, : len(audio)] = torch.from_numpy(audio)
    with torch.inference_mode(), precision:
        features, feature_lengths = model.preprocessor(input_signal=signal, length=lengths)
        encoded, encoded_lengths = model.encoder(audio_signal=features, length=feature_lengths)
    with torch.no_grad():
        out.bias[: blank + 1] -= out.bias[: blank + 1].mean()
        if durations:
            prior = torch.tensor(DURATION_PRIOR[:durations], device=device)
            out.weight[blank + 1 :] *= 0.1  # the prior decides, the audio only nudges
            out.bias[blank + 1 :] = torch.log(prior / prior.sum()) * 10
    base = float(out.bias[blank])

    def rate(offset: float) -> float:
        with torch.no_grad():
            out.bias[blank] = base + offset
        with torch.inference_mode(), precision:
            hyps = model.decoding.rnnt_decoder_predictions_tensor(encoder_output=encoded,
                                                                  encoded_lengths=encoded_lengths)
        return sum(len(h.y_sequence) for h in hyps) / int(encoded_lengths.sum())

    low, high = -50.0, 50.0  # the rate falls as the blank's offset grows
    for _ in range(24):
        middle = (low + high) / 2
        low, high = (middle, high) if rate(middle) > target else (low, middle)
    reached = rate((low + high) / 2)
    if math.isnan(reached) or abs(reached - target) > 0.1:
        raise SystemExit(f"calibration reached {reached:.3f} tokens per frame, not {target}")
    return reached


def bench_audio(files: int = 16) -> list[np.ndarray]:
    """The first evaluation files, as the benchmarks send them."""
    from parakeet_serve.bench.clips import read_audio
    from parakeet_serve.evaluation import demo_manifest, read_manifest

    return [read_audio(e) for e in read_manifest(demo_manifest())[:files]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=sorted(SIZES))
    a = parser.parse_args()
    audios = bench_audio()
    for size in a.sizes:
        build(a.out, size, audios)


if __name__ == "__main__":
    main()
