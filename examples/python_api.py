"""susl from Python, scikit-learn style: learn the labelled digits, discover the others.

    python examples/python_api.py [--epochs N] [--save run.h5]

scikit-learn's handwritten digits (1,797 rows of 8x8 pixels), labels as words: 30% of the
rows of zero..four are labelled, five..nine are never labelled. `fit` trains GM-DGM on the
training rows (labels as given, settings chosen from the data size, as `susl train` does),
groups its extra components into new classes, and `predict` names held-out rows with a
labelled class or new-1, new-2, ... The true classes of the held-out rows are only used here,
at the end, to score what was found. `--save` writes the checkpoint `susl predict` reads.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from susl_cli import SemiUnsupervised
from susl_cli.errors import SuslError

WORDS = np.asarray(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                    "nine"], dtype=object)
LABELLED = WORDS[:5]  # five..nine are never labelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: chosen from the data size (README \"Choices\")")
    parser.add_argument("--save", help="also write the model as a susl checkpoint here")
    args = parser.parse_args()

    digits = load_digits()
    x, truth = digits.data / 16.0, WORDS[digits.target]
    x_train, x_test, truth_train, truth_test = train_test_split(
        x, truth, test_size=0.2, stratify=truth, random_state=0)
    rng = np.random.default_rng(0)
    labelled = np.isin(truth_train, LABELLED) & (rng.random(len(truth_train)) < 0.3)
    y = np.where(labelled, truth_train, None)  # None (or -1, NaN, "") = unlabelled

    model = SemiUnsupervised(random_state=0, epochs=args.epochs).fit(x_train, y)
    print(f"classes: {', '.join(model.classes_)} ({model.n_new_classes_} found in the "
          "unlabelled rows)")

    predicted = model.predict(x_test)  # a labelled class name or new-1, new-2 ...
    known = np.isin(truth_test, LABELLED)
    accuracy = np.mean(predicted[known] == truth_test[known])
    print(f"labelled classes: {accuracy:.1%} of {known.sum()} held-out rows named correctly")
    for name in model.classes_[len(LABELLED):]:
        members, counts = np.unique(truth_test[predicted == name], return_counts=True)
        top = ", ".join(f"{c} {m}" for m, c in sorted(zip(members, counts, strict=True),
                                                         key=lambda mc: -mc[1])[:3])
        print(f"  {name}: {len(truth_test[predicted == name])} held-out rows ({top or 'none'})")
    novelty = model.novelty(x_test)  # q mass on the new classes
    print(f"novelty AUROC (never-labelled vs labelled digits): "
          f"{roc_auc_score(~known, novelty):.3f}")
    proba = model.predict_proba(x_test)  # columns in the order of model.classes_
    print(f"predict_proba: {proba.shape[0]} rows x {proba.shape[1]} classes")

    if args.save:
        model.save(args.save, overwrite=True)
        again = SemiUnsupervised.load(args.save)
        same = np.array_equal(again.predict(x_test), predicted)
        print(f"saved {args.save}; loaded again: {'same' if same else 'DIFFERENT'} predictions")


if __name__ == "__main__":
    try:
        main()
    except SuslError as err:  # the same one-line messages the CLI prints
        sys.exit(f"error: {err}")
