"""Average the weights of two `.nemo` models of one run: a sitting's end and the model it started from.

Each sitting is a warm restart (a warm-up to the full learning rate, then a decay), so its model and the
one it started from sit in one basin; their mean can generalise better than either end (the fifth sitting,
training/README.md). Floating-point tensors are averaged, the rest (BatchNorm's batch counts) come from
the second model, which also gives the configuration and tokenizer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from parakeet_serve.engine.loader import load_nemo_model, quiet_nemo
from training.train import export


def mix(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
    """`(1 - weight) * first + weight * second` for every floating-point tensor, refusing different models."""
    if first.keys() != second.keys() or any(first[k].shape != second[k].shape for k in first):
        raise SystemExit("the two models differ in their weights' names or shapes: not one run")
    return {k: torch.lerp(first[k], second[k], weight) if second[k].is_floating_point() else second[k]
            for k in second}


def average(first: Path, second: Path, out: Path, weight: float = 0.5) -> None:
    quiet_nemo()
    model = load_nemo_model(second)
    model.load_state_dict(mix(load_nemo_model(first).state_dict(), model.state_dict(), weight))
    export(model, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="the model the sitting started from")
    parser.add_argument("second", type=Path, help="the sitting's model")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--weight", type=float, default=0.5, help="the second model's share")
    options = parser.parse_args()
    average(options.first, options.second, options.out, options.weight)


if __name__ == "__main__":
    main()
