"""Evaluation maths: turn predicted components into accuracies under each published protocol.

A model with K components predicts, for every point, the component c = argmax_y q(y|x). The
true classes live in 0..C-1. Turning components into classes needs a mapping (K,) -> class id,
with -1 meaning "this component has no class": any point predicted into such a component is
counted wrong. Three mappings are offered, each named by the protocol it implements:

- majority ("cluster and label", paper eq 13): each component takes the most common true
  class among the points used to fit the mapping; many components may share one class.
- Hungarian: a one-to-one assignment maximising the matched counts (the clustering standard);
  when K > C the unmatched components map to -1, when K < C some classes are never predicted.
- classifier: the model's own labels, no relabelling: component j < n_labelled is the j-th
  labelled class, every extra component is -1.

Only numpy, scipy and scikit-learn are used here; no torch, no printing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from susl_cli.errors import DataError
from susl_cli.run_meta import component_classes

# scipy and scikit-learn are imported where they are used: the CLI modules that import this one
# for metric names (console.py) must not pay seconds for them at start-up.

UNMAPPED = -1  # mapping value of a component that stands for no class

# The scalar metrics that summarise_runs averages over runs, in table order.
SUMMARY_FIELDS: tuple[str, ...] = (
    "cluster_acc_majority",
    "cluster_acc_hungarian",
    "known_acc_classifier",
    "known_acc_majority",
    "novel_acc_majority",
    "nmi",
    "ari",
    "n_components_used",
    "discovered_acc_all",
    "discovered_acc_old",
    "discovered_acc_new",
    "n_new_found",
    "n_new_true",
    "novelty_auroc",
    "entropy_auroc",
)
# Counts among the summary fields; the rest are fractions (shown as percentages).
COUNT_FIELDS = frozenset({"n_components_used", "n_new_found", "n_new_true"})


def _as_labels(values: Any, name: str, upper: int) -> np.ndarray:
    """Return `values` as a 1-D int64 array, checking every entry is in [0, upper)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{name} must hold integer ids, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.size and (array.min() < 0 or array.max() >= upper):
        bad = array[(array < 0) | (array >= upper)][0]
        raise DataError(
            f"{name} holds {bad}, outside 0..{upper - 1}; "
            "drop unlabelled (-1) points or check the number of classes/components"
        )
    return array


def _check_pair(components: Any, true: Any, n_components: int, n_classes: int) -> tuple:
    comps = _as_labels(components, "components", n_components)
    labels = _as_labels(true, "true classes", n_classes)
    if comps.shape != labels.shape:
        raise DataError(
            f"{comps.size} predicted components but {labels.size} true classes; "
            "pass one prediction per point"
        )
    return comps, labels


def contingency(components: Any, true: Any, n_components: int, n_classes: int) -> np.ndarray:
    """Counts of points per (true class, component): a (C, K) int64 matrix."""
    comps, labels = _check_pair(components, true, n_components, n_classes)
    table = np.zeros((n_classes, n_components), dtype=np.int64)
    np.add.at(table, (labels, comps), 1)
    return table


def majority_mapping(
    fit_components: Any, fit_true: Any, n_components: int, n_classes: int
) -> np.ndarray:
    """Map each component to the most common true class among its fit points (paper eq 13).

    Ties go to the lowest class id (np.argmax returns the first maximum). A component with no
    fit points maps to -1: it never predicts a fit point, and any other point predicted into
    it is counted wrong, since nothing seen when fitting says which class it stands for.
    """
    table = contingency(fit_components, fit_true, n_components, n_classes)  # (C, K)
    mapping = table.argmax(axis=0)
    mapping[table.sum(axis=0) == 0] = UNMAPPED
    return mapping.astype(np.int64)


def hungarian_mapping(
    fit_components: Any, fit_true: Any, n_components: int, n_classes: int
) -> np.ndarray:
    """One-to-one component -> class mapping maximising matched counts (linear_sum_assignment).

    min(K, C) pairs are matched; the other components map to -1. A matched pair may have zero
    overlap (the solver still pairs leftovers); that is harmless, as it adds no correct points.
    """
    table = contingency(fit_components, fit_true, n_components, n_classes)  # (C, K)
    from scipy.optimize import linear_sum_assignment

    classes, comps = linear_sum_assignment(table, maximize=True)
    mapping = np.full(n_components, UNMAPPED, dtype=np.int64)
    mapping[comps] = classes
    return mapping


def classifier_mapping(labelled_classes: Sequence[int], n_components: int) -> np.ndarray:
    """The classifier's own labels: component j < n_labelled is labelled_classes[j], others -1."""
    labelled = list(labelled_classes)
    if len(labelled) > n_components:
        raise DataError(
            f"{len(labelled)} labelled classes but only {n_components} components; "
            "a model needs one component per labelled class"
        )
    return component_classes(labelled, n_components)  # unmapped components: -1 (UNMAPPED)


def accuracy(mapped_pred: Any, true: Any) -> float:
    """Fraction of points whose mapped class equals the true class (-1 never does); NaN if none."""
    pred = np.asarray(mapped_pred)
    labels = np.asarray(true)
    if pred.shape != labels.shape:
        raise DataError(f"{pred.size} predictions but {labels.size} true classes")
    if pred.size == 0:
        return math.nan
    return float(np.mean(pred == labels))


def entropy(probs: Any) -> np.ndarray:
    """Natural-log entropy -sum_y q(y|x) log q(y|x) of each row of (N, K) probabilities.

    scipy's entr defines 0 log 0 = 0, so rows with exact zeros stay finite.
    """
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim != 2:
        raise DataError(f"probabilities must be an (N, K) matrix, got shape {array.shape}")
    if array.size and array.min() < 0:
        raise DataError("probabilities must be non-negative; pass softmax outputs, not logits")
    from scipy.special import entr

    return entr(array).sum(axis=1)


@dataclass(frozen=True)
class Metrics:
    """Every number `susl evaluate` reports for one model on one set of points.

    Accuracies are fractions in [0, 1]; NaN where the subset they score is empty.
    `confusion` is (C, C + 1): rows are true classes, columns the class given by the majority
    mapping, and the last column counts points predicted into an unmapped component (only
    possible when the mapping was fitted on other points). It stays C + 1 wide, even when that
    column is all zero, so its shape never depends on the data. `contingency` is the raw
    (C, K) class x component count matrix.
    """

    cluster_acc_majority: float
    cluster_acc_hungarian: float
    known_acc_classifier: float
    known_acc_majority: float
    novel_acc_majority: float
    nmi: float
    ari: float
    n_components_used: int
    n_components: int
    mapping_fit: Literal["test", "train"]
    n_points: int
    mapping_majority: np.ndarray  # (K,) class id per component, -1 = unmapped
    mapping_hungarian: np.ndarray  # (K,)
    confusion: np.ndarray  # (C, C + 1) true class x mapped class, last column unmapped
    contingency: np.ndarray  # (C, K) true class x component
    # Discovery (susl_cli/discover.py): the labelled classes plus the new classes found,
    # scored one-to-one (GCD's "v2": one Hungarian assignment over all points, then split into
    # old = labelled-class points and new = hidden-class points). NaN until filled in.
    discovered_acc_all: float = math.nan
    discovered_acc_old: float = math.nan
    discovered_acc_new: float = math.nan
    n_new_found: float = math.nan  # k-hat, from the run's training points without labels
    n_new_true: float = math.nan  # hidden classes among the scored points
    novelty_auroc: float = math.nan  # novelty score, hidden vs labelled-class points
    entropy_auroc: float = math.nan  # entropy of q(y|x) as the same score (paper Fig 2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy: arrays become lists, NaN becomes None."""
        return {
            field.name: _jsonable(getattr(self, field.name)) for field in dataclasses.fields(self)
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _subset_accuracy(
    mapping: np.ndarray, comps: np.ndarray, labels: np.ndarray, keep: np.ndarray
) -> float:
    """Accuracy of `mapping` on the points selected by the boolean mask `keep`."""
    return accuracy(mapping[comps[keep]], labels[keep])


def mapped_confusion(mapped: np.ndarray, true: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C + 1) counts of true class x mapped class; mapped -1 goes to the last column."""
    columns = np.where(mapped == UNMAPPED, n_classes, mapped)
    table = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
    np.add.at(table, (true, columns), 1)
    return table


def evaluate_assignments(
    components: Any,
    true: Any,
    *,
    n_components: int,
    n_classes: int,
    labelled_classes: Sequence[int],
    fit_components: Any = None,
    fit_true: Any = None,
) -> Metrics:
    """Score predicted components against true classes under every protocol.

    The majority and Hungarian mappings are fitted on (fit_components, fit_true) when given
    (mapping_fit="train"), else on the scored points themselves (the paper's protocol, "test").
    Known-class accuracies score points whose true class is in `labelled_classes`; the novel
    one scores the others.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    comps, labels = _check_pair(components, true, n_components, n_classes)
    if comps.size == 0:
        raise DataError("no points to evaluate; pass at least one prediction")
    if (fit_components is None) != (fit_true is None):
        raise DataError("pass both fit_components and fit_true, or neither")
    fitted_on_test = fit_components is None
    fit_c, fit_y = (comps, labels) if fitted_on_test else (fit_components, fit_true)
    majority = majority_mapping(fit_c, fit_y, n_components, n_classes)
    hungarian = hungarian_mapping(fit_c, fit_y, n_components, n_classes)
    classifier = classifier_mapping(labelled_classes, n_components)

    known = np.isin(labels, np.asarray(list(labelled_classes), dtype=np.int64))
    return Metrics(
        cluster_acc_majority=accuracy(majority[comps], labels),
        cluster_acc_hungarian=accuracy(hungarian[comps], labels),
        # With no labelled classes `known` is all False, so these come out NaN.
        known_acc_classifier=_subset_accuracy(classifier, comps, labels, known),
        known_acc_majority=_subset_accuracy(majority, comps, labels, known),
        novel_acc_majority=_subset_accuracy(majority, comps, labels, ~known),
        nmi=float(normalized_mutual_info_score(labels, comps)),
        ari=float(adjusted_rand_score(labels, comps)),
        n_components_used=int(np.unique(comps).size),
        n_components=int(n_components),
        mapping_fit="test" if fitted_on_test else "train",
        n_points=int(comps.size),
        mapping_majority=majority,
        mapping_hungarian=hungarian,
        confusion=mapped_confusion(majority[comps], labels, n_classes),
        contingency=contingency(comps, labels, n_components, n_classes),
    )


def _run_value(run: Metrics | dict[str, Any], name: str) -> float:
    value = getattr(run, name) if isinstance(run, Metrics) else run.get(name)
    return math.nan if value is None else float(value)


def summarise_runs(
    runs: Sequence[Metrics | dict[str, Any]],
) -> dict[str, tuple[float, float]]:
    """Mean and sample sd (ddof=1) of each scalar metric over runs, for a mean +- sd table.

    Accepts Metrics or their to_dict() form (None read as NaN). The sd is NaN for one run, and
    a metric that is NaN in any run stays NaN: averaging only the runs that have it would hide
    that the runs differ. Fields missing from every dict are left out.
    """
    if not runs:
        raise DataError("no runs to summarise; pass at least one evaluation")
    summary: dict[str, tuple[float, float]] = {}
    for name in SUMMARY_FIELDS:
        if all(isinstance(run, dict) and name not in run for run in runs):
            continue
        values = np.array([_run_value(run, name) for run in runs], dtype=np.float64)
        sd = float(np.std(values, ddof=1)) if values.size > 1 else math.nan
        summary[name] = (float(np.mean(values)), sd)
    return summary


def discovery_scores(predicted: Any, true: Any, *, n_predicted: int, n_classes: int,
                     labelled_classes: Sequence[int], novelty: Any, entropies: Any,
                     n_new_found: int) -> dict[str, float]:
    """Honest scores of named predictions (labelled classes + discovered ones) on true classes.

    One Hungarian assignment between the n_predicted output classes and the C true classes
    over all points (GCD "v2"), accuracy on all points and on the old (labelled-class) and
    new (hidden-class) subsets; the AUROC of the novelty score and of the entropy for telling
    hidden-class points from labelled-class ones; k-hat against the true number of hidden
    classes among these points.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import roc_auc_score

    pred, labels = _check_pair(predicted, true, n_predicted, n_classes)
    table = contingency(pred, labels, n_predicted, n_classes)  # (C, P)
    classes, outputs = linear_sum_assignment(table, maximize=True)
    mapping = np.full(n_predicted, UNMAPPED, dtype=np.int64)
    mapping[outputs] = classes
    hit = mapping[pred] == labels
    new = ~np.isin(labels, np.asarray(list(labelled_classes), dtype=np.int64))

    def auroc(score: Any) -> float:
        if new.all() or not new.any():
            return math.nan  # needs points of both kinds
        return float(roc_auc_score(new, np.asarray(score, dtype=np.float64)))

    return {
        "discovered_acc_all": float(hit.mean()),
        "discovered_acc_old": float(hit[~new].mean()) if (~new).any() else math.nan,
        "discovered_acc_new": float(hit[new].mean()) if new.any() else math.nan,
        "n_new_found": float(n_new_found),
        "n_new_true": float(np.unique(labels[new]).size),
        "novelty_auroc": auroc(novelty),
        "entropy_auroc": auroc(entropies),
    }
