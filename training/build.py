"""One seeded command that regenerates the demo model's data and retrains it.

    python -m training.build            # data (~6 min) + training (50 min) on 2 CPU cores
"""

from __future__ import annotations

import argparse
import time

import torch

from training import data, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=train.MINUTES, help="training time budget")
    a = parser.parse_args()
    began = time.monotonic()
    data.build(train_count=data.TRAIN_UTTERANCES, eval_seen=150, eval_held_out=100, seed=a.seed, workers=2)
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    manifest = train.ROOT / "data" / "train.jsonl"
    train.train(manifest, train.DEFAULT_OUT, a.minutes, a.seed, train.PEAK_LR, train.BATCH_SECONDS)
    print(f"demo model rebuilt in {(time.monotonic() - began) / 60:.1f} min")


if __name__ == "__main__":
    main()
