"""Choosing which training labels a model may see.

A mask is (labelled classes L, label amount, seed). For each class c in L we keep the labels of
round(p * n_c) of its training points (or exactly N with labels-per-class), drawn uniformly with
`numpy.random.default_rng(seed)`; every other point gets -1, the scikit-learn "unlabelled" mark.
Classes outside L keep no labels at all: they are the hidden classes a model must discover.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from susl_cli.errors import UsageError
from susl_cli.index_ranges import RangeWords, expand_ranges, is_range_part
from susl_cli.preprocess import check_input_features
from susl_cli.storage.masked import MaskedDataset, MaskMetadata

if TYPE_CHECKING:
    from susl_cli.data.sources import Dataset

DEFAULT_LABEL_FRACTION = 0.2  # the paper's protocol
SEED_MAX = 2**32 - 1  # a 32-bit seed: stored in the file as an HDF5 integer
REGIME_NAMES = {
    "US": "unsupervised (US)",
    "SS": "semi-supervised (SS)",
    "SUS": "semi-unsupervised (SUS)",
}
AS_GIVEN_NOTE = "as given: the file's own labels, new classes allowed"
MAX_CLASSES = 100_000  # class ids above this are refused before a list of them is built
_SPEC_EXAMPLES = "e.g. '0-4', '0,2,7', '1-3,8', 'all' or 'none'"


def parse_class_spec(spec: str, n_classes: int | None) -> tuple[int, ...]:
    """Parse a class list such as `0-4`, `0,2,7`, `1-3,8`, `all` or `none` into sorted ids.

    With `n_classes=None` only the syntax is checked (and `all` is refused), which lets the CLI
    reject a malformed spec before loading any data.
    """
    text = spec.strip().lower()
    if text == "none":
        return ()
    if text == "all":
        if n_classes is None:
            raise UsageError("class spec 'all' needs the dataset's number of classes")
        return tuple(range(n_classes))
    words = RangeWords("class", f"class spec {spec!r}", repr(spec), _SPEC_EXAMPLES,
                       "this dataset has classes", f"susl allows at most {MAX_CLASSES} classes")
    classes = expand_ranges(text, n_classes, MAX_CLASSES, words)
    _check_classes(classes, spec, n_classes)
    return tuple(sorted(classes))


def check_class_spec_syntax(spec: str) -> None:
    """Reject a malformed class spec before any data is loaded (ranges are checked later)."""
    if spec.strip().lower() != "all":
        parse_class_spec(spec, None)


def _check_classes(classes: list[int], spec: str, n_classes: int | None) -> None:
    seen: set[int] = set()
    for c in classes:
        if c in seen:
            raise UsageError(f"class {c} appears twice in class spec {spec!r}: list it once")
        seen.add(c)
        if n_classes is not None and c >= n_classes:
            raise UsageError(
                f"class {c} in {spec!r} is out of range: this dataset has classes "
                f"0..{n_classes - 1}"
            )


def resolve_label_amount(
    label_fraction: float | None, labels_per_class: int | None
) -> tuple[float | None, int | None]:
    """Validate the label amount: exactly one of fraction in (0, 1] or a count >= 1.
    Neither given means the paper's default fraction, 0.2."""
    if label_fraction is not None and labels_per_class is not None:
        raise UsageError("give either --label-fraction or --labels-per-class, not both")
    if labels_per_class is not None:
        if labels_per_class < 1:
            raise UsageError(f"--labels-per-class must be at least 1, got {labels_per_class}")
        return None, int(labels_per_class)
    p = DEFAULT_LABEL_FRACTION if label_fraction is None else float(label_fraction)
    if not math.isfinite(p) or not 0.0 < p <= 1.0:
        raise UsageError(f"--label-fraction must be in (0, 1], got {label_fraction}")
    return p, None


def regime_of(n_labelled_classes: int, n_classes: int) -> str:
    """'US' with no labelled class, 'SS' with all of them, 'SUS' with a strict subset."""
    if n_labelled_classes == 0:
        return "US"
    return "SS" if n_labelled_classes == n_classes else "SUS"


def choose_labelled(
    y: np.ndarray,
    labelled_classes: Sequence[int],
    *,
    label_fraction: float | None = None,
    labels_per_class: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Observed labels (N,) int64: the chosen points of the labelled classes keep their label,
    all others are -1. Points already -1 stay -1; n_c counts only points labelled c.

    Same arguments and seed -> identical output (one generator, classes drawn in sorted order).
    """
    p, per_class = resolve_label_amount(label_fraction, labels_per_class)
    if not isinstance(seed, int | np.integer) or not 0 <= seed <= SEED_MAX:
        raise UsageError(f"--seed must be an integer in 0..{SEED_MAX}, got {seed!r}")
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=np.int64)
    observed = np.full_like(y, -1)
    for c in sorted(labelled_classes):
        members = np.flatnonzero(y == c)
        n_c = len(members)
        if n_c == 0:
            raise UsageError(
                f"class {c} has no labelled training examples: remove it from --labelled-classes"
            )
        # Python's round (half to even) is the documented rule: round(p * n_c).
        k = per_class if per_class is not None else int(round(p * n_c))
        if k > n_c:
            raise UsageError(
                f"--labels-per-class {k} is more than class {c} has ({n_c} labelled training "
                "examples): lower it"
            )
        if k == 0:
            raise UsageError(
                f"--label-fraction {p} gives class {c} ({n_c} examples) no labels at all: "
                "raise it or use --labels-per-class"
            )
        observed[rng.choice(members, size=k, replace=False)] = c
    return observed


def subset_training_points(dataset: Dataset, n: int, seed: int) -> Dataset:
    """`dataset` with n of its training points, drawn without replacement, in their order.

    The draw uses its own stream of `seed` (not the one that picks the labelled points).
    """
    total = len(dataset.y_train)
    if not 1 <= n <= total:
        raise UsageError(f"--train-subset must be in 1..{total} (the training points of "
                         f"{dataset.name}), got {n}")
    keep = np.sort(np.random.default_rng([seed, 1]).choice(total, size=n, replace=False))
    return dataclasses.replace(dataset, x_train=dataset.x_train[keep],
                               y_train=dataset.y_train[keep])


def make_masked_dataset(
    dataset: Dataset,
    labelled_classes: Sequence[int],
    *,
    label_fraction: float | None = None,
    labels_per_class: int | None = None,
    seed: int = 0,
    input_features: str | None = None,
    train_subset: int | None = None,
) -> MaskedDataset:
    """Mask `dataset`'s training labels; keep its true labels in the evaluation-only slot.

    `input_features` (e.g. "window-stats") is recorded as the representation training uses
    for this data unless told otherwise; None leaves the choice to training (raw).
    `train_subset` keeps that many training points, drawn uniformly with the seed (a quick
    run on a slice); the test set is kept whole.
    """
    if train_subset is not None:
        dataset = subset_training_points(dataset, train_subset, seed)
    if input_features is not None:
        check_input_features(dataset.x_train, dataset.input_kind, input_features)
    p, per_class = resolve_label_amount(label_fraction, labels_per_class)
    labelled = tuple(sorted(int(c) for c in labelled_classes))
    _check_classes(list(labelled), ",".join(map(str, labelled)), dataset.n_classes)
    observed = choose_labelled(
        dataset.y_train, labelled, label_fraction=p, labels_per_class=per_class, seed=seed
    )
    counts = np.bincount(observed[observed >= 0], minlength=dataset.n_classes)
    metadata = MaskMetadata(
        dataset=dataset.name,
        source_checksum=dataset.source_checksum,
        labelled_classes=labelled,
        hidden_classes=tuple(c for c in range(dataset.n_classes) if c not in labelled),
        labelled_counts=tuple(int(n) for n in counts),
        seed=int(seed),
        regime=regime_of(len(labelled), dataset.n_classes),
        created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        label_fraction=p if labelled else None,
        labels_per_class=per_class if labelled else None,
        input_features=input_features,
        train_subset=train_subset,
    )
    return MaskedDataset(
        x_train=dataset.x_train,
        y_observed=observed,
        x_test=dataset.x_test,
        y_test=dataset.y_test,
        class_names=dataset.class_names,
        input_kind=dataset.input_kind,
        metadata=metadata,
        y_train_true=dataset.y_train.copy(),
    )


def split_off_test(dataset: Dataset, fraction: float | None, seed: int) -> Dataset:
    """Move a seeded share of the rows into a test set (files that have none).

    Stratified over the labels: round(fraction * n_c) rows of each class c, and the same share
    of the unlabelled rows (-1) at random, so every class keeps its proportion in both parts.
    """
    if fraction is None:
        return dataset
    if not (math.isfinite(fraction) and 0.0 < fraction < 1.0):
        raise UsageError(f"--test-fraction must be in (0, 1), got {fraction}")
    if dataset.x_test is not None:
        raise UsageError(f"{dataset.name} already has a test set (x_test, y_test): drop "
                         "--test-fraction")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(dataset.y_train), dtype=bool)
    for value in np.unique(dataset.y_train):
        rows = np.flatnonzero(dataset.y_train == value)
        k = int(round(fraction * len(rows)))
        if value >= 0 and k >= len(rows):
            raise UsageError(
                f"--test-fraction {fraction:g} leaves class {dataset.class_names[value]!r} "
                f"({len(rows)} labelled rows) without training rows: lower it")
        test[rng.choice(rows, size=k, replace=False)] = True
    if not test.any():
        raise UsageError(f"--test-fraction {fraction:g} of {len(test)} rows is no row at all: "
                         "raise it")
    return dataclasses.replace(
        dataset, x_train=dataset.x_train[~test], y_train=dataset.y_train[~test],
        x_test=dataset.x_train[test], y_test=dataset.y_train[test])


def make_as_given_dataset(dataset: Dataset, *, seed: int = 0,
                          input_features: str | None = None) -> MaskedDataset:
    """Keep the user's own labels: no class spec, nothing more hidden.

    The labelled classes are those with a training label; classes seen only in the test
    labels are hidden ones. Classes nobody labelled anywhere may exist too, which is why
    training offers extra components on such a mask by default.
    """
    if input_features is not None:
        check_input_features(dataset.x_train, dataset.input_kind, input_features)
    observed = np.asarray(dataset.y_train, dtype=np.int64)
    counts = np.bincount(observed[observed >= 0], minlength=dataset.n_classes)
    labelled = tuple(int(c) for c in np.flatnonzero(counts))
    metadata = MaskMetadata(
        dataset=dataset.name, source_checksum=dataset.source_checksum,
        labelled_classes=labelled,
        hidden_classes=tuple(c for c in range(dataset.n_classes) if c not in labelled),
        labelled_counts=tuple(int(n) for n in counts), seed=int(seed),
        regime=regime_of(len(labelled), dataset.n_classes),
        created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        input_features=input_features, label_source="as-given")
    return MaskedDataset(x_train=dataset.x_train, y_observed=observed, x_test=dataset.x_test,
                         y_test=dataset.y_test, class_names=dataset.class_names,
                         input_kind=dataset.input_kind, metadata=metadata)


def classes_from_spec(spec: str, class_names: Sequence[str]) -> tuple[int, ...]:
    """Class ids for a spec, reading numbers as the file's own class numbers.

    A user file labelled {0, 3, 7} has three classes (ids 0, 1, 2) named "0", "3", "7": `-l 3`
    means the class named 3. Words can be listed too: `-l cat,dog`.
    """
    names = [str(n) for n in class_names]
    index = {name: i for i, name in enumerate(names)}
    if all(n.isdigit() for n in names) and names != [str(i) for i in range(len(names))]:
        wanted = parse_class_spec(spec, None if spec.strip().lower() != "all" else len(names))
        if spec.strip().lower() == "all":
            return wanted
        missing = [str(c) for c in wanted if str(c) not in index]
        if missing:
            raise UsageError(f"class {missing[0]} in {spec!r} is not in the data: its classes "
                             f"are {', '.join(names[:20])}")
        return tuple(sorted(index[str(c)] for c in wanted))
    parts = [p.strip() for p in spec.split(",")]
    if parts and all(p in index for p in parts) and not all(is_range_part(p) for p in parts):
        return tuple(sorted({index[p] for p in parts}))
    return parse_class_spec(spec, len(names))
