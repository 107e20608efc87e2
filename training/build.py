"""One seeded command that regenerates the demo model's data and retrains it.

    python -m training.build            # data (~30 min), then the whole training plan (hours)
    python -m training.build --minutes 120  # the same, the training stopping after 2 hours with a
                                            # checkpoint: `python -m training.train --resume ...` goes on
    python -m training.build --offline  # the same data, the offline-trained proxy (demo-offline.nemo)
"""

from __future__ import annotations

import argparse
import math
import time

from training import data, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=math.inf, help="this sitting's training time")
    parser.add_argument("--offline", action="store_true",
                        help="train the offline-trained proxy (full attention) instead of the demo model")
    a = parser.parse_args()
    began = time.monotonic()
    data.build(train_count=data.TRAIN_UTTERANCES, eval_seen=150, eval_held_out=100, seed=a.seed, workers=2)
    manifest = train.ROOT / "data" / "train.jsonl"
    bp = train.recipe(a.offline)
    train.train(manifest, None, train.Plan(minutes=a.minutes), a.seed, bp=bp)
    print(f"{train.default_out(bp).name} trained in {(time.monotonic() - began) / 60:.1f} min")


if __name__ == "__main__":
    main()
