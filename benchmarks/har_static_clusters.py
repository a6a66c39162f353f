"""Can UCI HAR's static postures be told apart without labels? A reference clustering.

    python benchmarks/har_static_clusters.py [--data-dir DIR]

In the SUS protocol on HAR (walking, upstairs, downstairs labelled) the hidden classes are
sitting, standing and laying, and GM-DGM's errors are almost all sitting <-> standing. This
fits diagonal Gaussian mixtures (scikit-learn) to the window-stats summaries of the training
windows of those three classes alone, with no labels, and prints the accuracy of the
majority mapping: how well a plain clustering of this representation separates them. True
labels are used only to score; this chooses nothing for susl.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from susl_cli.data.sources import load_dataset
from susl_cli.metrics import accuracy, majority_mapping
from susl_cli.window_features import feature_names, window_features

STATIC = ("SITTING", "STANDING", "LAYING")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = load_dataset("har", data_dir=args.data_dir)
    classes = [data.class_names.index(name) for name in STATIC]
    keep = np.isin(data.y_train, classes)
    x, y = data.x_train[keep], data.y_train[keep]
    summaries = window_features(x)
    summaries = (summaries - summaries.mean(0)) / np.maximum(summaries.std(0), 1e-8)
    names = feature_names(x.shape[1], x.shape[2])
    means = [i for i, name in enumerate(names) if name.endswith("_mean")]
    inputs = {
        f"window-stats ({summaries.shape[1]} values)": summaries,
        "window-stats, first 20 principal components":
            PCA(20, random_state=args.seed).fit_transform(summaries),
        f"channel means only ({len(means)} values)": summaries[:, means],
    }
    print(f"{len(y)} training windows of {', '.join(STATIC)}\n")
    print("| input | components | majority-mapped accuracy |\n|---|---:|---:|")
    for name, values in inputs.items():
        for k in (3, 10, 20, 40):
            mixture = GaussianMixture(k, covariance_type="diag", n_init=2,
                                      random_state=args.seed).fit(values)
            components = mixture.predict(values)
            mapping = majority_mapping(components, y, k, data.n_classes)
            print(f"| {name} | {k} | {100 * accuracy(mapping[components], y):.1f}% |")


if __name__ == "__main__":
    main()
