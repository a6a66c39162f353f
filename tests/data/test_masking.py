"""Class specs, the label-count arithmetic, determinism and regimes of data/masking.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from susl_cli.data.masking import (
    check_class_spec_syntax,
    choose_labelled,
    make_masked_dataset,
    parse_class_spec,
    regime_of,
    resolve_label_amount,
)
from susl_cli.data.sources import Dataset
from susl_cli.errors import UsageError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0-4", (0, 1, 2, 3, 4)),
        ("0,2,7", (0, 2, 7)),
        ("1-3,8", (1, 2, 3, 8)),
        (" 8, 1-3 ", (1, 2, 3, 8)),
        ("all", tuple(range(10))),
        ("ALL", tuple(range(10))),
        ("none", ()),
        ("9", (9,)),
        ("3-3", (3,)),
    ],
)
def test_parse_class_spec_valid(spec: str, expected: tuple[int, ...]) -> None:
    assert parse_class_spec(spec, 10) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0-10", "out of range"),
        ("12", "out of range"),
        ("0-4,3", "appears twice"),
        ("1,1", "appears twice"),
        ("4-0", "reversed"),
        ("", "malformed"),
        ("a-b", "malformed"),
        ("-1", "malformed"),
        ("0-", "malformed"),
        ("0,,2", "malformed"),
        ("1.5", "malformed"),
        ("0-2-4", "malformed"),
    ],
)
def test_parse_class_spec_invalid(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_class_spec(spec, 10)


def test_syntax_check_needs_no_class_count() -> None:
    check_class_spec_syntax("all")
    check_class_spec_syntax("0-400")  # range is checked once the data is known
    with pytest.raises(UsageError, match="malformed"):
        check_class_spec_syntax("zero")


@given(st.sets(st.integers(0, 19), max_size=20))
@settings(max_examples=50, deadline=None)
def test_parse_class_spec_round_trips_comma_lists(classes: set[int]) -> None:
    spec = ",".join(map(str, classes)) if classes else "none"
    assert parse_class_spec(spec, 20) == tuple(sorted(classes))


@pytest.mark.parametrize(("fraction", "per_class"), [(0.0, None), (-0.1, None), (1.01, None),
                                                     (float("nan"), None), (None, 0), (0.5, 5)])
def test_resolve_label_amount_rejects(fraction: float | None, per_class: int | None) -> None:
    with pytest.raises(UsageError):
        resolve_label_amount(fraction, per_class)


def test_resolve_label_amount_defaults_to_paper_fraction() -> None:
    assert resolve_label_amount(None, None) == (0.2, None)
    assert resolve_label_amount(1.0, None) == (1.0, None)
    assert resolve_label_amount(None, 7) == (None, 7)


def _labels(counts: list[int]) -> np.ndarray:
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(123).permutation(y).astype(np.int64)


@pytest.mark.parametrize("fraction", [0.2, 0.05, 0.5, 1.0, 0.33])
def test_fraction_keeps_round_p_times_n_per_class(fraction: float) -> None:
    counts = [57, 103, 88, 12, 40]
    y = _labels(counts)
    observed = choose_labelled(y, (0, 1, 3), label_fraction=fraction, seed=4)
    got = np.bincount(observed[observed >= 0], minlength=5)
    expected = [round(fraction * n) if c in (0, 1, 3) else 0 for c, n in enumerate(counts)]
    assert got.tolist() == expected
    labelled = observed >= 0
    assert (observed[labelled] == y[labelled]).all()  # kept labels are the true ones


def test_labels_per_class_and_too_many() -> None:
    y = _labels([30, 20, 10])
    observed = choose_labelled(y, (0, 1, 2), labels_per_class=10, seed=0)
    assert np.bincount(observed[observed >= 0]).tolist() == [10, 10, 10]
    with pytest.raises(UsageError, match="more than class 2 has"):
        choose_labelled(y, (0, 2), labels_per_class=11, seed=0)


def test_fraction_that_rounds_to_zero_and_empty_class_are_errors() -> None:
    y = _labels([100, 2, 0, 5])
    with pytest.raises(UsageError, match="no labels at all"):
        choose_labelled(y, (0, 1), label_fraction=0.1, seed=0)
    with pytest.raises(UsageError, match="class 2 has no labelled training examples"):
        choose_labelled(y, (2,), label_fraction=0.5, seed=0)


def test_same_seed_same_mask_different_seed_different_mask() -> None:
    y = _labels([500, 500, 500])
    a = choose_labelled(y, (0, 1), label_fraction=0.2, seed=7)
    b = choose_labelled(y, (0, 1), label_fraction=0.2, seed=7)
    c = choose_labelled(y, (0, 1), label_fraction=0.2, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_existing_unlabelled_points_stay_unlabelled() -> None:
    y = _labels([40, 40])
    y[::3] = -1  # the user's file already hides these
    n_known = [(y == c).sum() for c in (0, 1)]
    observed = choose_labelled(y, (0, 1), label_fraction=0.5, seed=0)
    assert (observed[y == -1] == -1).all()
    assert np.bincount(observed[observed >= 0]).tolist() == [round(0.5 * n) for n in n_known]
    everything = choose_labelled(y, (0, 1), label_fraction=1.0, seed=0)
    np.testing.assert_array_equal(everything, y)


@pytest.mark.parametrize(("n_labelled", "regime"), [(0, "US"), (3, "SUS"), (9, "SUS"),
                                                    (10, "SS")])
def test_regime(n_labelled: int, regime: str) -> None:
    assert regime_of(n_labelled, 10) == regime


def _dataset(y: np.ndarray) -> Dataset:
    x = np.random.default_rng(0).random((len(y), 3)).astype(np.float32)
    return Dataset("toy", x, y, x[:5], y[:5], ("a", "b", "c"), "image", "f" * 64)


@pytest.mark.parametrize(("spec", "regime"), [("none", "US"), ("0", "SUS"), ("all", "SS")])
def test_make_masked_dataset_metadata(spec: str, regime: str) -> None:
    data = _dataset(_labels([50, 30, 20]))
    masked = make_masked_dataset(data, parse_class_spec(spec, 3), label_fraction=0.2, seed=3)
    meta = masked.metadata
    assert meta.regime == regime
    assert set(meta.labelled_classes) | set(meta.hidden_classes) == {0, 1, 2}
    assert meta.labelled_counts == tuple(
        round(0.2 * n) if c in meta.labelled_classes else 0 for c, n in enumerate([50, 30, 20])
    )
    assert meta.seed == 3 and meta.dataset == "toy" and meta.source_checksum == "f" * 64
    assert (meta.label_fraction is None) == (regime == "US")
    np.testing.assert_array_equal(masked.y_train_true, data.y_train)
    assert masked.n_classes == 3 and masked.is_labelled.sum() == sum(meta.labelled_counts)


def test_train_subset_keeps_a_seeded_slice_and_the_whole_test_set() -> None:
    data = _dataset(_labels([50, 30, 20]))
    first = make_masked_dataset(data, (0,), label_fraction=0.2, seed=3, train_subset=40)
    again = make_masked_dataset(data, (0,), label_fraction=0.2, seed=3, train_subset=40)
    other = make_masked_dataset(data, (0,), label_fraction=0.2, seed=4, train_subset=40)
    assert first.x_train.shape == (40, 3) and first.metadata.train_subset == 40
    np.testing.assert_array_equal(first.x_train, again.x_train)
    assert not np.array_equal(first.x_train, other.x_train)
    assert len(first.y_test) == len(data.y_test)
    assert set(map(tuple, first.x_train)) <= set(map(tuple, data.x_train))
    with pytest.raises(UsageError, match="--train-subset must be in 1..100"):
        make_masked_dataset(data, (0,), label_fraction=0.2, train_subset=101)
