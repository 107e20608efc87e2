"""Parakeet-sized models with random weights, for GPU benchmarks: the compute of the real models.

    PYTHONPATH=. python loadtest/gpu/build_models.py --out /tmp/parakeet-random [--sizes 0.6b 1.1b]

Shapes follow the published Parakeet TDT checkpoints: FastConformer, d_model 1024, 8x
depthwise-striding subsampling, 24 (0.6B) or 42 (1.1B) layers, a TDT decoder and joint of 640,
1024 BPE tokens. Their transcripts are noise; their speed, memory and batching are the real ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from parakeet_serve.engine.blueprint import Blueprint, build_model, train_tokenizer
from parakeet_serve.engine.loader import quiet_nemo
from training.text import unique_sentences

SIZES = {
    "0.6b": Blueprint(head="tdt", n_layers=24, d_model=1024, n_heads=8, conv_kernel=9, subsampling_channels=256,
                      pred_hidden=640, joint_hidden=640, vocab_size=1024, dropout=0.0),
    "1.1b": Blueprint(head="tdt", n_layers=42, d_model=1024, n_heads=8, conv_kernel=9, subsampling_channels=256,
                      pred_hidden=640, joint_hidden=640, vocab_size=1024, dropout=0.0),
}


def build(out: Path, size: str) -> Path:
    quiet_nemo()
    tokenizer = train_tokenizer(out / "tokenizer", SIZES[size].vocab_size, unique_sentences(0, 5000))
    model = build_model(SIZES[size], tokenizer)
    path = out / f"parakeet-{size}-random.nemo"
    model.save_to(str(path))
    params = sum(p.numel() for p in model.parameters())
    print(f"{path}: {params / 1e6:.0f} M parameters")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=sorted(SIZES))
    a = parser.parse_args()
    for size in a.sizes:
        build(a.out, size)


if __name__ == "__main__":
    main()
