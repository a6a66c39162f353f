"""The prior p(y) over components and how many extra components a run gets.

The objective itself (paper eqs 6, 7, 11) is assembled by the model: `model(batch)`, with the
shared default for the q(y|x) q(z|x,y) family in susl_cli/models/base.py.
"""

from __future__ import annotations

import numpy as np

from susl_cli.config import PRIOR_MIN
from susl_cli.errors import ConfigError


def default_extra_components(n_labelled: int, n_classes: int) -> int:
    """40 extra components when some classes have no labels (paper section 3.2), else 0."""
    return 40 if n_labelled < n_classes else 0


def as_given_labelled_mass(labelled_counts: np.ndarray, n_train: int) -> float:
    """Prior mass of the labelled classes when the labels come from the user as given.

    The labelling rate is unknown, so the labelled classes get half the mass (the middle of
    what is possible), never less than the share of rows that carry a label. Erring low is
    the safer side: a labelled class spread into extra components is merged back by
    discovery, a new class squeezed into a labelled component is lost.
    """
    share = float(np.sum(labelled_counts)) / max(n_train, 1)
    return float(np.clip(max(0.5, share), 0.01, 0.99))


def class_prior(
    labelled_counts: np.ndarray, n_extra: int, labelled_mass: float | None
) -> tuple[float, ...]:
    """p(y) over K = n_labelled + n_extra components (README "Choices": prior p(y)).

    The labelled components share `labelled_mass` in proportion to their labelled counts
    (their observed frequency); the extra components share the rest uniformly. With no
    extra components the labelled classes take all the mass; with no labelled classes the
    prior is uniform.
    """
    counts = np.asarray(labelled_counts, dtype=float)
    n_labelled = counts.size
    if n_labelled + n_extra == 0:
        raise ConfigError("no labelled classes and no extra components: give "
                          "--extra-components N (N > 0) to cluster unlabelled data")
    if n_labelled == 0:
        return tuple([1.0 / n_extra] * n_extra)
    if n_extra == 0:
        return tuple((counts / counts.sum()).tolist())
    if labelled_mass is None or not 0 < labelled_mass < 1:
        raise ConfigError(
            f"--labelled-mass must be in (0, 1), got {labelled_mass}: it is the prior share "
            "of the data expected in the labelled classes"
        )
    labelled = labelled_mass * counts / counts.sum()
    extra = np.full(n_extra, (1 - labelled_mass) / n_extra)
    prior = np.concatenate([labelled, extra])
    if prior.min() < PRIOR_MIN:
        raise ConfigError(
            f"--labelled-mass {labelled_mass:g} gives a component the prior probability "
            f"{prior.min():g}, too small to train with (below {PRIOR_MIN:g}): choose a value "
            "nearer the share of the data expected in the labelled classes, e.g. 0.5"
        )
    return tuple(prior.tolist())


def estimate_labelled_mass(
    labelled_counts: np.ndarray, label_fraction: float | None, n_train: int, n_classes: int
) -> float:
    """Expected share of the data that belongs to the labelled classes.

    With a known label fraction p, the labelled classes hold about sum(counts) / p points;
    otherwise assume equally frequent classes: n_labelled / n_classes (the paper's "half").
    """
    counts = np.asarray(labelled_counts, dtype=float)
    if label_fraction:
        share = counts.sum() / label_fraction / max(n_train, 1)
    else:
        share = counts.size / max(n_classes, 1)
    return float(np.clip(share, 0.01, 0.99))
