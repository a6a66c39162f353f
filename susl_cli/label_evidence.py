"""What the labelled rows themselves say about which unlabelled rows belong to labelled classes.

The merge the train summary warns about (a labelled component taking in a hidden class that
looks like it) happens because nothing in objective (11) asks whether an unlabelled row is
*like the labelled rows of c*, only whether it is more like c than like any other component.
The labelled rows answer that question directly. Under the masking protocol (and under a user's
labelling, as far as it picked rows of a class without looking at them) the labelled rows of
class c are a random sample of class c: positive-unlabelled (PU) learning's "selected
completely at random" assumption. A classifier g that tells the labelled rows of each class
from the unlabelled rows then gives, for an unlabelled row x (Elkan & Noto 2008),

    P(y = c | x, unlabelled) = (1 - e_c) / e_c * g_c(x) / g_u(x),

g_c(x) the probability that x is a labelled row of c, g_u(x) that it is an unlabelled row,
e_c = P(labelled | class c), estimated as the mean of g_c over c's labelled rows. No label
fraction has to be known, and no label of a hidden class is read: only the observed labels and
the rows. The sum over c is the probability that x belongs to *some* labelled class, `known`;
1 - known is a per-row novelty estimate.

g is read off the k nearest neighbours of x (the share of them that are labelled rows of c, or
unlabelled rows) in standardised inputs, projected on PCA_DIMS principal components when wider.
Measured with one mask per split (20% of the labelled classes' rows labelled), the AUC of
`known` for telling the labelled classes' unlabelled rows from the hidden classes' is
0.980-0.984 on four MNIST splits, 0.933-0.987 on four Fashion-MNIST splits and 0.962-0.9998 on
four UCI HAR window-stats splits. A multinomial logistic regression in its place scored
0.92-0.96 (MNIST) and 0.94 (Fashion-MNIST 0-4): the unlabelled rows are several classes, which
a linear g cannot wrap around one labelled class, and its e_c came out at 0.08 instead of 0.2
on a small synthetic set.

The trainer uses 1 - known, the probability that a row is new, as a soft label "none of the
labelled classes" in a cross-entropy with q(y|x), the extra components pooled, on the rows the
estimate calls more likely new than known (1 - known > CALLED_NEW; losses.evidence_cross_entropy,
weight ObjectiveConfig.label_evidence). On every row, it also pushed the labelled classes' own
rows, whose noisy neighbour counts give them novelty 0.1-0.4, and over long runs extra
components took a fifth of them. Only the "new" side: targets
per labelled class (pulling a row the neighbours call "class c" into component c) were
measured too, and on a 1,500-row MNIST slice, where the estimate mixes the nines with the
fours, they taught that merge (labelled share 2.46x against 1.44x without label evidence);
the one-sided label did not (0.90x). Known/new alone as a two-sided target taught a tiny run
"known" before it taught which labelled class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

PCA_DIMS = 50  # wider inputs are projected: distances over 784 pixels are mostly noise
NEIGHBOURS = 50  # k of the neighbour estimate of g (fewer on small sets: neighbours_for)
# g_c / g_u is a ratio of neighbour counts: with k = 9 (a 180-row set) a fifth of a labelled
# class's unlabelled rows drew so few labelled neighbours that they read as new (k = 30: 4%)
MIN_NEIGHBOURS = 30
REFERENCE_ROWS = 30_000  # at most this many rows are searched (a stratified sample)
SCORE_ROWS = 8192  # rows read and scored at a time
PROPENSITY_FLOOR = 1e-3  # e_c below this would make (1 - e_c) / e_c explode
# a row is "called new", and pushed out of the labelled components in training
# (losses.evidence_cross_entropy), when its P(new) = 1 - known is above this
CALLED_NEW = 0.5


@dataclass(frozen=True)
class LabelEvidence:
    """The estimate for one training set."""

    known: np.ndarray  # (N_u,) float32 in [0, 1]: P(row belongs to some labelled class)
    propensity: np.ndarray  # (n_labelled,) e_c, the estimated labelled fraction of class c

    @property
    def known_share(self) -> float:
        """Estimated share of the unlabelled rows that belong to labelled classes: the mean of
        `known`. Measured against the truth (one mask per split): 0.43 vs 0.44 (MNIST 5-9),
        0.44 vs 0.46 (HAR 1,3,5); low by ~0.06 on a 800-row set, where each row's ratio of
        neighbour counts is noisy and clipping at 1 cuts only its high side. (The count
        n_c (1 - e_c) / e_c inherits e_c's low bias instead: 0.54 vs 0.44 on MNIST 5-9.)"""
        return float(self.known.mean()) if self.known.size else 0.0

    @property
    def n_called_new(self) -> int:
        """How many unlabelled rows training keeps out of the labelled components."""
        return int((1 - self.known > CALLED_NEW).sum())

    def describe(self, expected_share: float, weight: float) -> str:
        """One line for the train summary: the estimate beside what the prior p(y) expects."""
        fractions = "/".join(f"{e:.2f}" for e in self.propensity)
        return (f"weight {weight:g}; your labelled rows put {100 * self.known_share:.0f}% of the "
                f"{self.known.size} unlabelled rows in labelled classes (the prior p(y) "
                f"expects {100 * expected_share:.0f}%) and call {self.n_called_new} of them "
                f"new, which training keeps out of the labelled classes; estimated labelled "
                f"fraction per labelled class {fractions}")


class Rows(Protocol):
    """Unlabelled rows, in memory (a NumPy array) or read on demand (a streamed run)."""

    def __len__(self) -> int: ...
    def __getitem__(self, positions: np.ndarray) -> np.ndarray: ...


def estimate_label_evidence(x_labelled: np.ndarray, y_labelled: np.ndarray, x_unlabelled: Rows,
                            n_labelled: int, seed: int = 0) -> LabelEvidence:
    """g from the k nearest neighbours, and `known` for every unlabelled row.

    Labels are component indices 0..n_labelled-1. The neighbours are searched among at most
    REFERENCE_ROWS rows (a stratified sample; all rows of a smaller set), each row leaving
    itself out; the other unlabelled rows are read SCORE_ROWS at a time, so a streamed run
    never holds all its rows."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_l, n_u = len(x_labelled), len(x_unlabelled)
    y_labelled = np.asarray(y_labelled, dtype=np.int64)
    target = np.concatenate([y_labelled, np.full(n_u, n_labelled, dtype=np.int64)])
    ref = _stratified_sample(target, REFERENCE_ROWS, np.random.default_rng(seed))
    ref_u = ref[ref >= n_l] - n_l
    x_ref = np.concatenate([_flat(x_labelled[ref[ref < n_l]]), _flat(x_unlabelled[ref_u])])
    t_ref = target[ref]
    steps = [StandardScaler()]
    if x_ref.shape[1] > PCA_DIMS:
        steps.append(PCA(PCA_DIMS, random_state=seed))
    features = make_pipeline(*steps).fit(x_ref)
    f_ref = features.transform(x_ref)
    k = neighbours_for(len(ref))
    index = NearestNeighbors(n_neighbors=min(k + 1, len(ref))).fit(f_ref)

    def shares(f: np.ndarray, leave_self_out: bool) -> np.ndarray:
        """(B, n_labelled + 1): the share of each target among the k neighbours."""
        found = index.kneighbors(f, return_distance=False)
        found = found[:, 1:] if leave_self_out else found[:, :k]
        return np.stack([(t_ref[found] == c).mean(1) for c in range(n_labelled + 1)], 1)

    g_ref = np.concatenate([shares(f_ref[a:a + SCORE_ROWS], True)
                            for a in range(0, len(ref), SCORE_ROWS)])
    g_u = np.zeros((n_u, n_labelled + 1))
    g_u[ref_u] = g_ref[ref >= n_l]
    rest = np.setdiff1d(np.arange(n_u), ref_u)
    for first in range(0, len(rest), SCORE_ROWS):
        chunk = rest[first:first + SCORE_ROWS]
        g_u[chunk] = shares(features.transform(_flat(x_unlabelled[chunk])), False)

    in_ref = ref < n_l
    g_l, y_ref = g_ref[in_ref], y_labelled[ref[in_ref]]
    propensity = np.array([g_l[y_ref == c, c].mean() if np.any(y_ref == c) else 1.0
                           for c in range(n_labelled)]).clip(PROPENSITY_FLOOR, 1.0)
    odds = (1 - propensity) / propensity  # (n_labelled,)
    # a row whose neighbours are all labelled has g_u = 0: the floor 1/k makes it "known"
    known = (g_u[:, :n_labelled] * odds).sum(1) / np.maximum(g_u[:, n_labelled], 1 / k)
    return LabelEvidence(known.clip(0, 1).astype(np.float32), propensity)


def neighbours_for(n_rows: int) -> int:
    """k: NEIGHBOURS, fewer on a small set (one per 20 rows, at least MIN_NEIGHBOURS), and
    fewer than the rows searched."""
    return int(max(1, min(NEIGHBOURS, max(MIN_NEIGHBOURS, n_rows // 20), n_rows - 1)))


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).reshape(len(x), -1)


def _stratified_sample(target: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most n row indices, each class keeping its share (all rows when there are fewer)."""
    if len(target) <= n:
        return np.arange(len(target))
    picked = [rng.choice(rows, max(2, round(len(rows) * n / len(target))), replace=False)
              if len(rows) > 2 else rows
              for rows in (np.flatnonzero(target == c) for c in np.unique(target))]
    return np.sort(np.concatenate(picked))


def _proba(model, features: np.ndarray, n_labelled: int) -> np.ndarray:
    """Class probabilities in columns 0..n_labelled (a class absent from the fit gets 0)."""
    out = np.zeros((len(features), n_labelled + 1))
    out[:, model.classes_] = model.predict_proba(features)
    return out
