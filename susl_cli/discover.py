"""Discovery: turn a trained model's extra components into counted, named new classes.

A model trained on a semi-unsupervised mask has K = L + E components: the first L are tied to
the labelled classes, the E extra ones are free. A hidden class usually ends up spread over
several extra components. Discovery groups the extra components, with no label of any class:

1. Every training point is assigned to its most probable component; extra components with
   enough points take part (the others join the nearest group at the end).
2. A distance between extra components, one of:
   - "overlap" (default): -log of the cosine similarity of the components' q(y|x) columns over
     the training points (how often the classifier hesitates between them; any model);
   - "latent": the Bhattacharyya distance between Gaussians fitted to the posterior means of z
     of each component's points (how much their latent densities overlap).
   On six benchmark checkpoints (docs/results.md, "Discovery") they found the same k-hat on
   five; "overlap" came 0.8 points closer to the majority-mapped accuracy on average (the two
   differ by more than 2 points on two checkpoints, one each way) and needs nothing but q(y|x).
3. Average-linkage agglomeration of the extra components on that distance; the number of
   groups k is the one with the best silhouette (Rousseeuw 1987), and 1 when no cut reaches
   a silhouette of 0.25 (no substantial structure) or when even the last merge joins groups
   that overlap heavily (distance below 1). `n_new` fixes k when the user knows it.
4. The groups are the discovered classes new-1 .. new-k, largest (in training points) first.

Measured on MNIST, Fashion-MNIST and UCI HAR: docs/results.md ("Discovery").

The result is a map component -> output class (L known + k new) stored in the checkpoint and
used by predict, evaluate, sample and info.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from susl_cli.errors import UsageError
from susl_cli.run_meta import component_classes

METHODS = ("overlap", "latent")
MIN_SILHOUETTE = 0.25  # below it no cut shows substantial structure: one new class
# Groups closer than this on average overlap heavily (Bhattacharyya coefficient, or cosine of
# q(y|x) columns, above e^-1 = 0.37): when even the last merge is below it, one new class.
ONE_CLASS_BELOW = 1.0
NEW_PREFIX = "new-"
VAR_FLOOR = 1e-4  # relative floor on unit variances: a unit of identical points stays finite


@dataclass(frozen=True)
class DiscoveryOptions:
    """How to group the extra components; validated on creation."""

    method: str = "overlap"  # distance between components: "overlap" or "latent"
    n_new: int | None = None  # fix the number of new classes; None = estimate it
    min_points: int = 0  # components with fewer assigned points are attached, not clustered;
    # 0 = automatic: max(5, 0.1% of the training points)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"unknown discovery method {self.method!r}: use "
                             f"{' or '.join(METHODS)}")
        if self.n_new is not None and self.n_new < 0:
            raise UsageError(f"--new-classes must be >= 0, got {self.n_new}")
        if self.min_points < 0:
            raise UsageError(f"--min-points must be >= 0, got {self.min_points}")


@dataclass(frozen=True)
class Discovery:
    """Component -> output class. Output classes: the L labelled ones, then new-1 .. new-k."""

    component_class: tuple[int, ...]  # (K,) output class index of every component
    class_names: tuple[str, ...]  # (L + k,) names: labelled class names, then new-1 ..
    n_labelled: int  # L
    method: str  # how the cut was chosen
    sizes: tuple[int, ...]  # (L + k,) training points per output class (argmax q(y|x))
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def n_new(self) -> int:
        return len(self.class_names) - self.n_labelled

    @property
    def new_components(self) -> np.ndarray:
        """(K,) bool: the components that stand for a discovered (new) class."""
        return np.asarray(self.component_class) >= self.n_labelled

    def classify(self, probs: np.ndarray) -> np.ndarray:
        """(N,) output class of each row: the class with the most q(y|x) mass.

        Summing q over a class's components, rather than taking the class of the single best
        component, lets a hidden class spread over several components win against one labelled
        component that holds more mass than any one of them.
        """
        return self.class_probs(probs).argmax(-1)

    def class_probs(self, probs: np.ndarray) -> np.ndarray:
        """(N, L + k) q(y|x) summed over the components of each output class."""
        out = np.zeros((len(probs), len(self.class_names)), dtype=np.float64)
        np.add.at(out.T, np.asarray(self.component_class), np.asarray(probs, np.float64).T)
        return out

    def novelty(self, probs: np.ndarray) -> np.ndarray:
        """(N,) probability that a row belongs to none of the labelled classes."""
        return self.class_probs(probs)[:, self.n_labelled:].sum(-1)

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Discovery:
        return cls(component_class=tuple(int(c) for c in data["component_class"]),
                   class_names=tuple(str(n) for n in data["class_names"]),
                   n_labelled=int(data["n_labelled"]), method=str(data["method"]),
                   sizes=tuple(int(s) for s in data["sizes"]),
                   details=dict(data.get("details", {})))


def no_discovery(n_components: int, labelled_names: list[str]) -> Discovery:
    """The labelled components alone (a model without extra components)."""
    n = len(labelled_names)
    return Discovery(tuple(range(n_components)), tuple(labelled_names), n, "none",
                     tuple([0] * n))


def discover_classes(embedding: np.ndarray | None, probs: np.ndarray, labelled_names: list[str],
                     options: DiscoveryOptions = DiscoveryOptions()) -> Discovery:
    """Group the extra components of a model from its training points (no labels read).

    embedding: (N, d) posterior means of z, needed by the "latent" distance only (None for
    "overlap": small components then join the group whose points' q(y|x) they resemble most);
    probs: (N, K) q(y|x). The first
    len(labelled_names) components are the labelled classes, in that order.
    """
    if embedding is None and options.method == "latent":
        raise ValueError("the latent distance needs the posterior means of z")
    n_labelled = len(labelled_names)
    n_components = probs.shape[1]
    assigned = probs.argmax(-1)
    features = embedding if embedding is not None else probs
    counts = np.bincount(assigned, minlength=n_components)
    min_points = options.min_points or max(5, math.ceil(0.001 * len(assigned)))
    major = np.asarray([j for j in range(n_labelled, n_components) if counts[j] >= min_points],
                       dtype=np.int64)
    details: dict[str, Any] = {"min_points": min_points, "n_points": len(assigned),
                               "n_grouped_components": len(major)}
    if options.n_new is not None and options.n_new > max(len(major), 0) and options.n_new:
        raise UsageError(f"--new-classes {options.n_new} is more than the {len(major)} extra "
                         f"components that hold at least {min_points} training points: lower it")
    groups: dict[int, int] = {}
    if len(major) and options.n_new != 0:
        distances = component_distances(options.method, embedding, probs, assigned, major)
        labels, details["silhouette"] = _cut(distances, options.n_new)
        ranked = _rank(labels, counts[major])
        groups = {int(j): n_labelled + ranked[lab] for j, lab in zip(major, labels, strict=True)}
    component_class = _finish(groups, features, assigned, n_labelled, n_components)
    k = max([c - n_labelled + 1 for c in component_class if c >= n_labelled], default=0)
    names = (*labelled_names, *(f"{NEW_PREFIX}{i + 1}" for i in range(k)))
    sizes = np.bincount(np.asarray(component_class)[assigned], minlength=len(names))
    return Discovery(tuple(component_class), names, n_labelled, options.method,
                     tuple(int(s) for s in sizes), details)


def component_distances(method: str, embedding: np.ndarray | None, probs: np.ndarray,
                        assigned: np.ndarray, components: np.ndarray) -> np.ndarray:
    """(E, E) symmetric distances between the given components (zero diagonal)."""
    if method == "latent" and embedding is not None:
        points = [embedding[assigned == j] for j in components]
        floor = embedding.var(0).mean() * VAR_FLOOR + 1e-12
        d = bhattacharyya(np.stack([p.mean(0) for p in points]),
                          np.stack([p.var(0) + floor for p in points]))
    else:
        columns = probs[:, components].astype(np.float64)  # (N, E)
        gram = columns.T @ columns
        norm = np.sqrt(np.diag(gram))
        d = -np.log(np.clip(gram / np.outer(norm, norm), 1e-12, 1.0))
    np.fill_diagonal(d, 0.0)
    return np.maximum(0.5 * (d + d.T), 0.0)


def bhattacharyya(means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """(U, U) Bhattacharyya distances between diagonal Gaussians N(means[i], diag variances[i]).

    D = 1/8 (m1 - m2)' S^-1 (m1 - m2) + 1/2 ln(det S / sqrt(det S1 det S2)), S = (S1 + S2) / 2:
    zero for identical densities, growing as they overlap less.
    """
    s = 0.5 * (variances[:, None, :] + variances[None, :, :])  # (U, U, d)
    diff = means[:, None, :] - means[None, :, :]
    log_v = np.log(variances)
    term_mean = 0.125 * np.sum(diff ** 2 / s, -1)
    term_cov = 0.5 * (np.log(s).sum(-1) - 0.5 * (log_v.sum(-1)[:, None] + log_v.sum(-1)[None]))
    d = term_mean + term_cov
    np.fill_diagonal(d, 0.0)
    return np.maximum(0.5 * (d + d.T), 0.0)


def _cut(distances: np.ndarray, n_new: int | None) -> tuple[np.ndarray, float | None]:
    """Group labels (1..k) of the units, and the silhouette that chose k (None if fixed)."""
    from sklearn.metrics import silhouette_score  # scikit-learn is slow to import

    n = len(distances)
    if n == 1 or n_new == 1:
        return np.ones(n, dtype=np.int64), None
    tree = linkage(squareform(distances, checks=False), "average")
    if n_new is not None:
        return fcluster(tree, n_new, "maxclust"), None
    if tree[-1, 2] < ONE_CLASS_BELOW:
        return np.ones(n, dtype=np.int64), None
    best_labels, best = np.ones(n, dtype=np.int64), -1.0
    for k in range(2, n):
        labels = fcluster(tree, k, "maxclust")
        if len(set(labels)) < 2:
            continue
        score = float(silhouette_score(distances, labels, metric="precomputed"))
        if score > best:
            best_labels, best = labels, score
    if best < MIN_SILHOUETTE:
        return np.ones(n, dtype=np.int64), best
    return best_labels, best


def _rank(labels: np.ndarray, weights: np.ndarray) -> dict[int, int]:
    """Group label -> 0-based rank by training points, largest first (ties: smaller label)."""
    totals: dict[int, float] = {}
    for label, w in zip(labels.tolist(), weights.tolist(), strict=True):
        totals[label] = totals.get(label, 0.0) + w
    order = sorted(totals, key=lambda lab: (-totals[lab], lab))
    return {lab: i for i, lab in enumerate(order)}


def _finish(groups: dict[int, int], embedding: np.ndarray, assigned: np.ndarray,
            n_labelled: int, n_components: int) -> list[int]:
    """Every component's output class; components left out join the nearest grouped one."""
    # output classes 0..L-1 are the labelled ones: the labelled components by the run's rule
    component_class = component_classes(range(n_labelled), n_components).tolist()
    for j, c in groups.items():
        component_class[j] = c
    grouped = [j for j in range(n_components) if component_class[j] >= 0
               and np.any(assigned == j)]
    if grouped:
        centres = np.stack([embedding[assigned == j].mean(0) for j in grouped])
        for j in range(n_labelled, n_components):
            if component_class[j] >= 0:
                continue
            points = embedding[assigned == j]
            if len(points) == 0:
                continue
            nearest = np.argmin(((centres - points.mean(0)) ** 2).sum(-1))
            component_class[j] = component_class[grouped[int(nearest)]]
    # components no point chose: the first new class if any, else the most common class
    new_exists = any(c >= n_labelled for c in component_class)
    fallback = n_labelled if new_exists or n_labelled == 0 else 0
    return [c if c >= 0 else fallback for c in component_class]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
