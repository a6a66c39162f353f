"""Evaluation maths: hand-computed cases, then cross-checks against brute force and sklearn."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from susl_cli.errors import DataError
from susl_cli.metrics import (
    SUMMARY_FIELDS,
    Metrics,
    accuracy,
    classifier_mapping,
    contingency,
    entropy,
    evaluate_assignments,
    hungarian_mapping,
    majority_mapping,
    summarise_runs,
)

# K = 3 components, C = 3 classes.
SQUARE_COMPS = [0, 0, 0, 1, 1, 2, 2, 2, 2]
SQUARE_TRUE = [0, 0, 1, 1, 1, 2, 2, 0, 2]
# Rows = classes, columns = components:
#   class 0: comp0 x2 (idx 0,1), comp2 x1 (idx 7)  -> [2, 0, 1]
#   class 1: comp0 x1 (idx 2),  comp1 x2 (idx 3,4) -> [1, 2, 0]
#   class 2: comp2 x3 (idx 5,6,8)                  -> [0, 0, 3]
SQUARE_TABLE = [[2, 0, 1], [1, 2, 0], [0, 0, 3]]


def test_contingency_hand_computed() -> None:
    table = contingency(SQUARE_COMPS, SQUARE_TRUE, n_components=3, n_classes=3)
    np.testing.assert_array_equal(table, SQUARE_TABLE)
    assert table.shape == (3, 3) and table.sum() == len(SQUARE_COMPS)


def test_square_case_majority_and_hungarian_agree() -> None:
    # Column maxima 2, 2, 3 at classes 0, 1, 2: both mappings are the identity, 7/9 correct.
    majority = majority_mapping(SQUARE_COMPS, SQUARE_TRUE, 3, 3)
    hungarian = hungarian_mapping(SQUARE_COMPS, SQUARE_TRUE, 3, 3)
    np.testing.assert_array_equal(majority, [0, 1, 2])
    np.testing.assert_array_equal(hungarian, [0, 1, 2])
    assert accuracy(majority[SQUARE_COMPS], SQUARE_TRUE) == pytest.approx(7 / 9)


def test_more_components_than_classes() -> None:
    comps = [0, 0, 1, 1, 2, 2, 3]
    true = [0, 0, 0, 1, 1, 1, 1]
    # class 0: [2, 1, 0, 0]; class 1: [0, 1, 2, 1].
    # Majority: comp1 is a 1-1 tie -> lowest class 0; comps 2, 3 -> class 1. Correct 2+1+2+1 = 6.
    majority = majority_mapping(comps, true, 4, 2)
    np.testing.assert_array_equal(majority, [0, 0, 1, 1])
    assert accuracy(majority[comps], true) == pytest.approx(6 / 7)
    # One-to-one: class 0 <- comp0 (2), class 1 <- comp2 (2); comps 1, 3 unmatched. 4/7.
    hungarian = hungarian_mapping(comps, true, 4, 2)
    np.testing.assert_array_equal(hungarian, [0, -1, 1, -1])
    assert accuracy(hungarian[comps], true) == pytest.approx(4 / 7)


def test_fewer_components_than_classes() -> None:
    comps = [0, 0, 0, 1, 1, 1]
    true = [0, 0, 1, 2, 2, 1]
    # class 0: [2, 0]; class 1: [1, 1]; class 2: [0, 2]. Class 1 can never be predicted.
    majority = majority_mapping(comps, true, 2, 3)
    hungarian = hungarian_mapping(comps, true, 2, 3)
    np.testing.assert_array_equal(majority, [0, 2])
    np.testing.assert_array_equal(hungarian, [0, 2])
    assert accuracy(majority[comps], true) == pytest.approx(4 / 6)


def test_empty_component_maps_to_minus_one() -> None:
    # Component 1 gets no points: majority has nothing to go on.
    majority = majority_mapping([0, 0, 2], [1, 1, 0], 3, 2)
    np.testing.assert_array_equal(majority, [1, -1, 0])
    # Hungarian matches class 1 <- comp0 (2) and class 0 <- comp2 (1); comp1 is left over.
    np.testing.assert_array_equal(hungarian_mapping([0, 0, 2], [1, 1, 0], 3, 2), [1, -1, 0])


def test_classifier_mapping() -> None:
    np.testing.assert_array_equal(classifier_mapping((0, 2), 4), [0, 2, -1, -1])
    np.testing.assert_array_equal(classifier_mapping((), 3), [-1, -1, -1])
    with pytest.raises(DataError, match="3 labelled classes but only 2 components"):
        classifier_mapping((0, 1, 2), 2)


def test_accuracy_counts_unmapped_as_wrong() -> None:
    assert accuracy([-1, 1, 0], [1, 1, 1]) == pytest.approx(1 / 3)
    assert math.isnan(accuracy([], []))


def test_entropy_hand_computed() -> None:
    probs = [[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]
    # Uniform over 4: log 4; one-hot: 0 (0 log 0 = 0, no NaN); half-half: log 2.
    np.testing.assert_allclose(entropy(probs), [math.log(4), 0.0, math.log(2)])
    with pytest.raises(DataError, match="non-negative"):
        entropy([[-1.0, 2.0]])
    with pytest.raises(DataError, match="matrix"):
        entropy([0.5, 0.5])


def _sus_case() -> Metrics:
    """C = 4 classes, classes 0 and 1 labelled, K = 4 components (0, 1 tied to classes 0, 1)."""
    comps = [0, 0, 1, 1, 2, 3, 3, 2]
    true = [0, 1, 1, 1, 2, 3, 3, 3]
    return evaluate_assignments(comps, true, n_components=4, n_classes=4, labelled_classes=(0, 1))


def test_evaluate_assignments_hand_computed() -> None:
    m = _sus_case()
    # Contingency rows: c0 [1,0,0,0], c1 [1,2,0,0], c2 [0,0,1,0], c3 [0,0,1,2].
    # Majority: comp0 ties c0/c1 -> c0; comp1 -> c1; comp2 ties c2/c3 -> c2; comp3 -> c3.
    np.testing.assert_array_equal(m.mapping_majority, [0, 1, 2, 3])
    # Mapped [0,0,1,1,2,3,3,2] vs true [0,1,1,1,2,3,3,3]: wrong at idx 1 and 7 -> 6/8.
    assert m.cluster_acc_majority == pytest.approx(6 / 8)
    assert m.cluster_acc_hungarian == pytest.approx(6 / 8)  # diagonal 1+2+1+2 is the max
    # Known points idx 0-3; classifier labels [0,1,-1,-1] give [0,0,1,1] vs [0,1,1,1]: 3/4.
    assert m.known_acc_classifier == pytest.approx(3 / 4)
    assert m.known_acc_majority == pytest.approx(3 / 4)
    assert m.novel_acc_majority == pytest.approx(3 / 4)  # idx 4-7, idx 7 wrong
    assert (m.n_components_used, m.n_components, m.n_points) == (4, 4, 8)
    assert m.mapping_fit == "test"
    # (C, C + 1): last column = unmapped, empty when the mapping is fitted on these points.
    expected = [[1, 0, 0, 0, 0], [1, 2, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 2, 0]]
    np.testing.assert_array_equal(m.confusion, expected)
    np.testing.assert_array_equal(m.contingency, [r[:4] for r in expected])


def test_mapping_fitted_on_train_sends_unseen_components_to_unmapped() -> None:
    # Fit: comp0 -> class 1, comp2 -> class 0, comp1 never seen -> -1.
    m = evaluate_assignments(
        [1, 0, 2], [0, 1, 0], n_components=3, n_classes=2, labelled_classes=(0,),
        fit_components=[0, 0, 2], fit_true=[1, 1, 0],
    )  # fmt: skip
    assert m.mapping_fit == "train"
    np.testing.assert_array_equal(m.mapping_majority, [1, -1, 0])
    # Mapped [-1, 1, 0] vs true [0, 1, 0]: the point in comp1 is wrong -> 2/3.
    assert m.cluster_acc_majority == pytest.approx(2 / 3)
    np.testing.assert_array_equal(m.confusion, [[1, 0, 1], [0, 1, 0]])


def test_regimes_without_known_or_novel_points_give_nan() -> None:
    unsupervised = evaluate_assignments(
        [0, 1], [0, 1], n_components=2, n_classes=2, labelled_classes=()
    )
    assert math.isnan(unsupervised.known_acc_classifier)
    assert math.isnan(unsupervised.known_acc_majority)
    assert unsupervised.novel_acc_majority == 1.0
    supervised = evaluate_assignments(
        [0, 1], [0, 1], n_components=2, n_classes=2, labelled_classes=(0, 1)
    )
    assert math.isnan(supervised.novel_acc_majority)
    assert supervised.known_acc_classifier == 1.0


def test_to_dict_is_json_with_nan_as_none() -> None:
    m = evaluate_assignments([0, 1], [0, 1], n_components=2, n_classes=2, labelled_classes=())
    data = json.loads(json.dumps(m.to_dict()))
    assert data["known_acc_classifier"] is None
    assert data["mapping_majority"] == [0, 1]
    assert data["confusion"] == [[1, 0, 0], [0, 1, 0]]
    assert data["mapping_fit"] == "test"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"components": [0, 3], "true": [0, 1]}, "components holds 3"),
        ({"components": [0, 1], "true": [0, -1]}, "drop unlabelled"),
        ({"components": [0, 1, 1], "true": [0, 1]}, "one prediction per point"),
        ({"components": [], "true": []}, "no points"),
        ({"components": [0.5], "true": [0]}, "integer"),
        ({"components": [0], "true": [0], "fit_true": [0]}, "both"),
    ],
)
def test_evaluate_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        evaluate_assignments(n_components=2, n_classes=2, labelled_classes=(0,), **kwargs)


def test_summarise_runs_mean_and_sample_sd() -> None:
    runs = [_sus_case().to_dict(), _sus_case().to_dict()]
    runs[1]["cluster_acc_majority"] = 0.5  # values 0.75 and 0.5
    summary = summarise_runs(runs)
    mean, sd = summary["cluster_acc_majority"]
    # mean 0.625; sample sd = sqrt(2 * 0.125^2 / 1) = 0.125 * sqrt(2).
    assert mean == pytest.approx(0.625)
    assert sd == pytest.approx(0.125 * math.sqrt(2))
    assert set(summary) == set(SUMMARY_FIELDS)


def test_summarise_one_run_has_nan_sd_and_keeps_nan_metrics() -> None:
    m = evaluate_assignments([0, 1], [0, 1], n_components=2, n_classes=2, labelled_classes=())
    summary = summarise_runs([m])
    assert summary["cluster_acc_majority"][0] == 1.0
    assert math.isnan(summary["cluster_acc_majority"][1])
    assert math.isnan(summary["known_acc_classifier"][0])  # None in every run stays NaN
    with pytest.raises(DataError, match="no runs"):
        summarise_runs([])


# Cross-checks on random small problems.
assignments = st.integers(min_value=1, max_value=4).flatmap(
    lambda n_classes: st.integers(min_value=1, max_value=5).flatmap(
        lambda n_components: st.tuples(
            st.just(n_classes),
            st.just(n_components),
            st.lists(
                st.tuples(st.integers(0, n_components - 1), st.integers(0, n_classes - 1)),
                min_size=1,
                max_size=25,
            ),
        )
    )
)


def _brute_force_one_to_one(table: np.ndarray) -> int:
    """Best total over every injective pairing of classes and components."""
    n_classes, n_components = table.shape
    if n_components >= n_classes:
        pairings = itertools.permutations(range(n_components), n_classes)
        return max(sum(table[c, p[c]] for c in range(n_classes)) for p in pairings)
    pairings = itertools.permutations(range(n_classes), n_components)
    return max(sum(table[p[k], k] for k in range(n_components)) for p in pairings)


@settings(max_examples=60, deadline=None)
@given(assignments)
def test_cross_checks(case: tuple) -> None:
    n_classes, n_components, pairs = case
    comps = np.array([p[0] for p in pairs])
    true = np.array([p[1] for p in pairs])
    table = contingency(comps, true, n_components, n_classes)
    m = evaluate_assignments(
        comps, true, n_components=n_components, n_classes=n_classes, labelled_classes=()
    )
    n = len(pairs)
    # Majority accuracy is the sum of column maxima of the contingency over N.
    assert m.cluster_acc_majority == pytest.approx(table.max(axis=0).sum() / n)
    assert m.cluster_acc_hungarian == pytest.approx(_brute_force_one_to_one(table) / n)
    assert m.cluster_acc_hungarian <= m.cluster_acc_majority + 1e-12
    # The one-to-one mapping really is one-to-one.
    matched = m.mapping_hungarian[m.mapping_hungarian >= 0]
    assert len(set(matched.tolist())) == matched.size == min(n_classes, n_components)
    assert m.nmi == pytest.approx(normalized_mutual_info_score(true, comps))
    assert m.ari == pytest.approx(adjusted_rand_score(true, comps))
    assert m.confusion.sum() == n and np.trace(m.confusion) == round(m.cluster_acc_majority * n)


def test_relabelled_perfect_clustering_scores_one() -> None:
    true = np.array([0, 0, 1, 1, 2, 2])
    comps = np.array([4, 4, 0, 0, 2, 2])  # a permutation of labels, plus unused components
    m = evaluate_assignments(comps, true, n_components=5, n_classes=3, labelled_classes=())
    assert m.cluster_acc_majority == m.cluster_acc_hungarian == 1.0
    assert m.nmi == pytest.approx(1.0) and m.ari == pytest.approx(1.0)
    assert m.n_components_used == 3
