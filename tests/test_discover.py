"""Discovery on synthetic components whose hidden classes are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from susl_cli.discover import (
    Discovery,
    DiscoveryOptions,
    bhattacharyya,
    discover_classes,
    no_discovery,
)
from susl_cli.errors import UsageError

N_LABELLED, N_HIDDEN, PER_CLASS = 2, 3, 3  # 3 hidden classes, each over 3 extra components


def _synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings (N, 2), q(y|x) (N, K) and each component's hidden class (-1 = labelled).

    Hidden class h sits around centre 12 * (cos, sin) of its angle; its PER_CLASS components
    are sub-clusters 1.5 apart around it. The last component is never used. q(y|x) puts 0.8 on
    the point's component and spreads 0.2 over the other components of its class, as a
    classifier hesitating between neighbouring components does.
    """
    rng = np.random.default_rng(seed)
    n_extra = N_HIDDEN * PER_CLASS + 1
    k = N_LABELLED + n_extra
    owner = np.full(k, -1)
    centres = np.zeros((k, 2))
    centres[:N_LABELLED] = [[-20, 0], [20, 0]]
    for h in range(N_HIDDEN):
        angle = 2 * np.pi * h / N_HIDDEN
        for s in range(PER_CLASS):
            j = N_LABELLED + h * PER_CLASS + s
            owner[j] = h
            centres[j] = 12 * np.array([np.cos(angle), np.sin(angle)]) + 1.5 * np.array(
                [np.cos(2 * np.pi * s / PER_CLASS), np.sin(2 * np.pi * s / PER_CLASS)])
    sizes = [300, 300] + [100 + 40 * h for h in range(N_HIDDEN) for _ in range(PER_CLASS)]
    component = np.repeat(np.arange(k - 1), sizes)
    embedding = centres[component] + rng.normal(0, 0.4, (len(component), 2))
    probs = np.full((len(component), k), 1e-4)
    for i, j in enumerate(component):
        mates = np.flatnonzero(owner == owner[j]) if owner[j] >= 0 else np.array([j])
        probs[i, mates] += 0.2 / len(mates)
        probs[i, j] += 0.8
    probs /= probs.sum(1, keepdims=True)
    return embedding, probs, owner


@pytest.mark.parametrize("method", ["latent", "overlap"])
def test_finds_the_hidden_classes_built_in(method: str) -> None:
    embedding, probs, owner = _synthetic()
    found = discover_classes(embedding, probs, ["a", "b"], DiscoveryOptions(method=method))
    assert found.n_new == N_HIDDEN
    assert found.class_names == ("a", "b", "new-1", "new-2", "new-3")
    classes = np.asarray(found.component_class)
    assert classes[:N_LABELLED].tolist() == [0, 1]  # labelled components keep their class
    for h in range(N_HIDDEN):  # each hidden class is exactly one discovered class
        assert len(set(classes[owner == h])) == 1
    assert len({classes[owner == h][0] for h in range(N_HIDDEN)}) == N_HIDDEN
    assert classes[-1] >= N_LABELLED  # the unused component still has a class
    # new-1 is the largest: hidden class 2 has the most points
    assert classes[owner == 2][0] == N_LABELLED and found.sizes[2] == max(found.sizes[2:])


def test_a_fixed_number_of_new_classes() -> None:
    embedding, probs, _ = _synthetic()
    assert discover_classes(embedding, probs, ["a", "b"], DiscoveryOptions(n_new=2)).n_new == 2
    none = discover_classes(embedding, probs, ["a", "b"], DiscoveryOptions(n_new=0))
    assert none.n_new == 0 and set(none.component_class) <= {0, 1}
    with pytest.raises(UsageError, match="--new-classes 50 is more than"):
        discover_classes(embedding, probs, ["a", "b"], DiscoveryOptions(n_new=50))
    with pytest.raises(UsageError, match="--new-classes must be >= 0"):
        DiscoveryOptions(n_new=-1)
    with pytest.raises(UsageError, match="unknown discovery method"):
        DiscoveryOptions(method="magic")


@pytest.mark.parametrize("method", ["latent", "overlap"])
def test_overlapping_components_of_one_class_are_one_new_class(method: str) -> None:
    """Four extra components sharing one blob (centres 0.3 apart, points sd 0.5), among which
    q(y|x) hesitates (0.4 on a point's own component, 0.2 on each other): they overlap so
    much that even the last merge is below the one-class distance."""
    rng = np.random.default_rng(1)
    component = np.repeat(np.arange(2, 6), 150)
    offsets = 0.3 * np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])
    embedding = offsets[component - 2] + rng.normal(0, 0.5, (600, 2))
    probs = np.full((600, 6), 1e-3)
    probs[:, 2:] = 0.2
    probs[np.arange(600), component] = 0.4
    probs /= probs.sum(1, keepdims=True)
    found = discover_classes(embedding, probs, ["a", "b"], DiscoveryOptions(method=method))
    assert found.n_new == 1 and found.details["silhouette"] is None


def test_bhattacharyya_closed_forms() -> None:
    means = np.array([[0.0], [2.0], [0.0]])
    variances = np.array([[1.0], [1.0], [4.0]])
    d = bhattacharyya(means, variances)
    assert d[0, 0] == 0 and d[0, 1] == pytest.approx(4 / 8)  # equal variances: d^2 / (8 s^2)
    # equal means, variances 1 and 4: 1/2 ln(2.5 / sqrt(4))
    assert d[0, 2] == pytest.approx(0.5 * np.log(2.5 / 2.0))
    assert np.allclose(d, d.T)


def test_classes_sum_mass_novelty_and_json_round_trip() -> None:
    found = Discovery(component_class=(0, 1, 2, 2), class_names=("a", "b", "new-1"),
                      n_labelled=2, method="latent", sizes=(1, 1, 2))
    probs = np.array([[0.4, 0.0, 0.3, 0.3],   # new-1 holds 0.6 over two components
                      [0.1, 0.7, 0.1, 0.1]])
    assert found.classify(probs).tolist() == [2, 1]
    assert found.novelty(probs) == pytest.approx([0.6, 0.2])
    assert found.new_components.tolist() == [False, False, True, True]
    assert Discovery.from_json(found.to_json()) == found


def test_no_extra_components_means_labelled_classes_only() -> None:
    found = no_discovery(2, ["a", "b"])
    assert found.n_new == 0 and found.classify(np.array([[0.2, 0.8]])).tolist() == [1]
