"""One seeded command that regenerates the demo model's data and retrains it.

    python -m training.build            # data (~14 min) + training (105 min) on 2 CPU cores
    python -m training.build --offline  # the same data, the offline-trained proxy (demo-offline.nemo)
"""

from __future__ import annotations

import argparse
import time

from training import data, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=train.MINUTES, help="training time budget")
    parser.add_argument("--offline", action="store_true",
                        help="train the offline-trained proxy (full attention) instead of the demo model")
    a = parser.parse_args()
    began = time.monotonic()
    data.build(train_count=data.TRAIN_UTTERANCES, eval_seen=150, eval_held_out=100, seed=a.seed, workers=2)
    manifest = train.ROOT / "data" / "train.jsonl"
    bp, out = train.recipe(a.offline)
    train.train(manifest, out, a.minutes, a.seed, train.PEAK_LR, train.BATCH_SECONDS, bp=bp)
    print(f"{out.name} rebuilt in {(time.monotonic() - began) / 60:.1f} min")


if __name__ == "__main__":
    main()
