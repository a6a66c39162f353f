"""Write a partly labelled CSV as a user would have one: scikit-learn's handwritten digits
(1,797 rows of 8x8 pixels, shipped with scikit-learn), labels as words, empty cells for rows
nobody labelled, and five classes that nobody labelled at all.

    python examples/make_partly_labelled_csv.py digits.csv [--truth digits-truth.csv]

--truth also writes every row's true class, kept apart (a user would not have it): use it to
check what discovery found, never to train or to choose settings.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LABELLED = ("zero", "one", "two", "three", "four")  # the others are never labelled
LABEL_SHARE = 0.3  # of the rows of a labelled class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--truth", help="also write the true class of every row here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    digits = load_digits()
    names = np.asarray(WORDS)[digits.target]
    rng = np.random.default_rng(args.seed)
    labelled = np.isin(names, LABELLED) & (rng.random(len(names)) < LABEL_SHARE)
    frame = pd.DataFrame(digits.data / 16.0, columns=[f"px{i}" for i in range(64)])
    frame["label"] = np.where(labelled, names, "")
    frame.to_csv(args.out, index=False)
    if args.truth:
        pd.DataFrame({"true_class": names}).to_csv(args.truth, index=False)
    print(f"wrote {args.out}: {len(frame)} rows, {int(labelled.sum())} labelled "
          f"({', '.join(LABELLED)}), classes {', '.join(WORDS[5:])} never labelled")


if __name__ == "__main__":
    main()
