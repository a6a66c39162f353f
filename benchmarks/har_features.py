"""How much the input representation caps HAR accuracy: a supervised linear probe.

    python benchmarks/har_features.py [--data-dir DIR]

Standardises raw UCI HAR inertial windows (9 channels x 128 steps = 1152 values) or their
`window-stats` summaries (susl_cli/window_features.py), fits a multinomial logistic
regression on all / 20% of the training labels, and prints test accuracy. A linear probe is
the fairest quick measure of what a representation makes easy; it is not a susl model.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from susl_cli.data.sources import load_dataset
from susl_cli.window_features import window_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = load_dataset("har", data_dir=args.data_dir)
    start = time.perf_counter()
    summaries = window_features(data.x_train), window_features(data.x_test)
    print(f"window-stats: {summaries[0].shape[1]} values per window, "
          f"{time.perf_counter() - start:.1f} s for {len(data.x_train) + len(data.x_test)} windows")
    flat = (data.x_train.reshape(len(data.x_train), -1),
            data.x_test.reshape(len(data.x_test), -1))
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(data.y_train))
    print("| input | labels used | test accuracy |\n|---|---:|---:|")
    for name, (train, test) in (("raw", flat), ("window-stats", summaries)):
        scaler = StandardScaler().fit(train)
        train, test = scaler.transform(train), scaler.transform(test)
        for fraction in (1.0, 0.2):
            chosen = order[: int(fraction * len(order))]
            probe = LogisticRegression(max_iter=2000).fit(train[chosen], data.y_train[chosen])
            print(f"| {name} | {fraction:.0%} | {probe.score(test, data.y_test):.1%} |")


if __name__ == "__main__":
    main()
