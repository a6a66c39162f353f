"""The known/new estimate from the labelled rows (susl_cli/label_evidence.py).

Synthetic sets with known answers: Gaussian classes, some labelled at a known fraction, the
others hidden. The estimate must rank hidden rows below the unlabelled rows of labelled
classes, recover the labelled fraction and the known share without being told either, read a
large set in pieces, and be the same run to run.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from susl_cli import label_evidence
from susl_cli.cli.train_summary import LABELLED_SHARE_WARNING
from susl_cli.data.masking import make_masked_dataset
from susl_cli.data.sources import Dataset
from susl_cli.evaluate import predict_probs
from susl_cli.label_evidence import estimate_label_evidence, neighbours_for
from susl_cli.runs import ModelOptions, load_model
from susl_cli.storage.masked import read_masked_dataset, write_masked_dataset
from susl_cli.train import train_mask_file


def gaussian_classes(n_per_class: int = 200, dim: int = 6, fraction: float = 0.25,
                     labelled: tuple[int, ...] = (0, 1), n_classes: int = 4, seed: int = 0):
    """(x_labelled, component of each, x_unlabelled, true class of each unlabelled row)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = (centres[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32)
    is_labelled = np.zeros(len(y), dtype=bool)
    for c in labelled:
        rows = np.flatnonzero(y == c)
        is_labelled[rng.choice(rows, round(fraction * len(rows)), replace=False)] = True
    component = np.searchsorted(labelled, y[is_labelled])
    return x[is_labelled], component, x[~is_labelled], y[~is_labelled]


def test_hidden_rows_score_new_and_labelled_class_rows_score_known():
    x_l, c_l, x_u, y_u = gaussian_classes()
    evidence = estimate_label_evidence(x_l, c_l, x_u, n_labelled=2)
    hidden = np.isin(y_u, (2, 3))
    assert evidence.known.shape == (len(x_u),) and evidence.known.dtype == np.float32
    assert 0 <= evidence.known.min() and evidence.known.max() <= 1
    assert np.mean(evidence.known[hidden] < 0.2) > 0.95
    assert np.mean(evidence.known[~hidden] > 0.5) > 0.9
    # neither the label fraction nor the class sizes were given: both are recovered
    assert np.allclose(evidence.propensity, 0.25, atol=0.06)
    assert evidence.known_share == pytest.approx(np.mean(~hidden), abs=0.08)


def test_a_large_set_is_searched_on_a_sample_and_read_in_pieces(monkeypatch):
    x_l, c_l, x_u, y_u = gaussian_classes(n_per_class=300)
    monkeypatch.setattr(label_evidence, "REFERENCE_ROWS", 300)
    monkeypatch.setattr(label_evidence, "SCORE_ROWS", 64)

    class CountingRows:  # what a streamed run passes: rows read on demand
        def __init__(self, x):
            self.x, self.reads = x, []

        def __len__(self):
            return len(self.x)

        def __getitem__(self, positions):
            self.reads.append(len(positions))
            return self.x[positions]

    rows = CountingRows(x_u)
    evidence = estimate_label_evidence(x_l, c_l, rows, n_labelled=2)
    assert max(rows.reads) < len(x_u)  # never the whole set at once
    assert sorted(rows.reads)[-2] <= 64  # past the sample, one piece of SCORE_ROWS at a time
    hidden = np.isin(y_u, (2, 3))
    assert np.mean(evidence.known[hidden] < 0.2) > 0.9
    assert np.mean(evidence.known[~hidden] > 0.5) > 0.9


def test_same_rows_same_estimate():
    x_l, c_l, x_u, _ = gaussian_classes()
    first = estimate_label_evidence(x_l, c_l, x_u, n_labelled=2, seed=3)
    second = estimate_label_evidence(x_l, c_l, x_u, n_labelled=2, seed=3)
    assert np.array_equal(first.known, second.known)


def test_a_class_with_one_labelled_row_and_a_tiny_set_still_get_an_estimate():
    x_l, c_l, x_u, y_u = gaussian_classes(n_per_class=20, fraction=0.05, labelled=(0,))
    assert len(x_l) == 1
    evidence = estimate_label_evidence(x_l, c_l, x_u, n_labelled=1)
    assert evidence.known.shape == (len(x_u),) and np.isfinite(evidence.known).all()
    assert 0 < evidence.propensity[0] <= 1


def test_fewer_neighbours_on_small_sets_but_enough_for_a_steady_ratio():
    assert neighbours_for(178) == label_evidence.MIN_NEIGHBOURS  # wine
    assert neighbours_for(900) == 45
    assert neighbours_for(60_000) == label_evidence.NEIGHBOURS
    assert neighbours_for(12) == 11  # never more than the other rows


def test_the_summary_line_says_what_was_estimated_beside_the_prior():
    x_l, c_l, x_u, _ = gaussian_classes()
    evidence = estimate_label_evidence(x_l, c_l, x_u, n_labelled=2)
    text = evidence.describe(0.4, 10)
    assert re.match(r"weight 10; your labelled rows put \d+% of the 700 unlabelled rows", text)
    assert "the prior p(y) expects 40%" in text and "per labelled class 0.2" in text
    # the rows training pushes out: those with P(new) over one half
    assert evidence.n_called_new == int((evidence.known < 0.5).sum()) > 0
    assert f"call {evidence.n_called_new} of them new" in text


# --- training acts on it --------------------------------------------------------------------

def lookalike_mask(path: Path) -> Path:
    """4 classes of 8-d Gaussian points; 0 and 1 labelled (20%); hidden class 2's centre is
    5 sd from class 0's: a mixture can tell them apart, but without the evidence the
    objective puts both in component 0 (measured: all of class 2, share 2.0x)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (4, 8))
    centres[2] = centres[0] + rng.normal(0, 1, 8) * 5 / np.sqrt(8)
    y = np.repeat(np.arange(4), 150)
    x = (centres[y] + rng.normal(0, 1, (len(y), 8))).astype(np.float32)
    data = Dataset("lookalike", x, y, None, None, ("a", "b", "c", "d"), "real", "synthetic")
    write_masked_dataset(path, make_masked_dataset(data, (0, 1), label_fraction=0.2, seed=0))
    return path


def test_training_keeps_a_lookalike_hidden_class_out_of_the_labelled_component(tmp_path):
    mask = lookalike_mask(tmp_path / "mask.h5")
    runs = {weight: train_mask_file(
        mask, tmp_path / f"run{weight}.h5",
        options=ModelOptions(extra_components=4, settings={"hidden_units": 64, "latent_dim": 4}),
        train_overrides=dict(epochs=40, label_evidence=weight, marginal_kl=1.0, batch_size=50,
                             labelled_batch_size=50),
        device="cpu", overwrite=True) for weight in (0.0, 10.0)}
    masked = read_masked_dataset(mask, with_true_labels=True)

    def share_in(run, true_class: int, component: int) -> float:
        """Of the unlabelled rows of a true class (read for scoring only), the share q(y|x)
        puts in `component`."""
        rows = masked.x_train[(masked.y_train_true == true_class) & (masked.y_observed < 0)]
        return float((predict_probs(run, rows).argmax(-1) == component).mean())

    plain, guided = runs[0.0], runs[10.0]
    assert plain.history["labelled_share_ratio"][-1] > LABELLED_SHARE_WARNING  # merged
    assert share_in(plain, 2, 0) > 0.9
    assert share_in(guided, 2, 0) < 0.5  # most of the hidden class left component 0 ...
    # ... while most of class 0 stayed (0.73 measured: the label only pushes out, and the
    # neighbour estimate calls class 0's rows nearest the hidden class new too)
    assert share_in(guided, 0, 0) > 0.6
    assert share_in(guided, 1, 1) > 0.9
    assert (guided.history["labelled_share_ratio"][-1]
            < plain.history["labelled_share_ratio"][-1] - 0.5)
    assert "evidence_ce_u" in guided.history and "evidence_ce_u" not in plain.history
    assert guided.meta.label_evidence.startswith("weight 10; your labelled rows put")
    assert load_model(tmp_path / "run10.0.h5").meta.label_evidence == guided.meta.label_evidence
