"""The merge guard (susl_cli/share_guard.py): training acts on the labelled-share signal.

The end-to-end test builds a tiny set where one hidden class is made to look like a labelled
one (its centre a short step from labelled class 0's), trains the same run with the guard off
and on, and checks that the guard brings the largest labelled share under the cap and moves
the hidden class out of the labelled component.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from susl_cli.cli.train_summary import LABELLED_SHARE_WARNING
from susl_cli.config import ObjectiveConfig
from susl_cli.data.masking import make_masked_dataset
from susl_cli.data.sources import Dataset
from susl_cli.errors import ConfigError
from susl_cli.evaluate import predict_probs
from susl_cli.runs import ModelOptions, load_model
from susl_cli.share_guard import (
    LAMBDA_START,
    STEP_GROWTH,
    WARMUP_EPOCHS,
    ShareGuard,
    component_share_ratios,
    dual_step,
    share_penalty,
    unlabelled_targets,
)
from susl_cli.storage.masked import read_masked_dataset, write_masked_dataset
from susl_cli.train import train_mask_file


def lookalike_mask(path: Path, seed: int = 0) -> Path:
    """4 classes of 8-d Gaussian points; 0 and 1 labelled (20%), hidden class 2 sits next to 0."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (4, 8))
    centres[2] = centres[0] + rng.normal(0, 1, 8) * 3 / np.sqrt(8)  # ~3 sd away: separable
    y = np.repeat(np.arange(4), 150)
    x = (centres[y] + rng.normal(0, 1, (len(y), 8))).astype(np.float32)
    data = Dataset("lookalike", x, y, None, None, ("a", "b", "c", "d"), "real", "synthetic")
    write_masked_dataset(path, make_masked_dataset(data, (0, 1), label_fraction=0.2, seed=0))
    return path


def train_lookalike(tmp_path: Path, cap: float, epochs: int = 40):
    mask = tmp_path / "mask.h5"
    if not mask.exists():
        lookalike_mask(mask)
    out = tmp_path / f"run-cap{cap}.h5"
    return train_mask_file(
        # latent 4, hidden 64: with latent 2 / hidden 32 the posterior of z collapsed (classes
        # 0 and 2 had the same posterior mean), leaving nothing but the classifier to go by
        mask, out, options=ModelOptions(extra_components=4,
                                settings={"hidden_units": 64, "latent_dim": 4}),
        train_overrides=dict(epochs=epochs, labelled_share_cap=cap, marginal_kl=1.0,
                             batch_size=50, labelled_batch_size=50,
                             label_evidence=0.0),  # the guard alone
        device="cpu", overwrite=True), out


def test_guard_undoes_a_hidden_class_merging_into_a_lookalike_labelled_one(tmp_path):
    unguarded, _ = train_lookalike(tmp_path, cap=0, epochs=10)  # merged from epoch 1 on
    guarded, out = train_lookalike(tmp_path, cap=1.15)
    before = unguarded.history["labelled_share_ratio"][-1]
    after = guarded.history["labelled_share_ratio"][-1]
    assert before > LABELLED_SHARE_WARNING  # the set does provoke the merge
    assert after <= guarded.model.objective.labelled_share_cap < before  # held under the cap
    assert max(guarded.history["share_multiplier_max"]) >= LAMBDA_START  # the guard did act
    assert guarded.history["share_multiplier_max"][:WARMUP_EPOCHS] == [0.0] * WARMUP_EPOCHS
    assert "share_multiplier_max" not in unguarded.history
    # the look-alike hidden class (true labels read here for scoring only) left component 0
    masked = read_masked_dataset(tmp_path / "mask.h5", with_true_labels=True)
    hidden, one = (masked.x_train[(masked.y_train_true == c) & (masked.y_observed < 0)]
                   for c in (2, 1))
    in_zero = [float((predict_probs(run, hidden).argmax(-1) == 0).mean())
               for run in (unguarded, guarded)]
    assert in_zero[0] > 0.5 > in_zero[1]
    # the known cost (README "Choices"): the penalty cannot tell which of c's points to push
    # out, and on this set most of labelled class 0 leaves with the hidden class; labelled
    # class 1, which nothing merged into, keeps its points
    assert float((predict_probs(guarded, one).argmax(-1) == 1).mean()) > 0.9
    # the guard's state travels with the checkpoint, so a resumed run continues the schedule
    stored = load_model(out).meta
    for key in ("share_multipliers", "share_average"):
        assert getattr(stored, key) == getattr(guarded.meta, key)


def test_multipliers_grow_above_the_cap_hold_inside_and_fall_below_the_prior():
    def step(multipliers, ratios):
        return dual_step(torch.tensor(multipliers), torch.tensor(ratios), cap=1.2).tolist()

    assert step([0.0, 0.0], [1.3, 1.1]) == [LAMBDA_START, 0.0]
    assert step([4.0, 4.0, 4.0], [1.3, 1.1, 0.9]) == pytest.approx(
        [4.0 * STEP_GROWTH, 4.0, 4.0 / STEP_GROWTH])
    assert step([LAMBDA_START], [0.5]) == [0.0]


def test_guard_reacts_within_an_epoch_and_releases_below_the_prior_share():
    targets = torch.tensor([0.2, 0.2])
    guard = ShareGuard(targets, cap=1.15, multipliers=[0.0, 0.0])
    merged = torch.tensor([[8.0, 0.0, 0.0, 0.0]]).repeat(10, 1)  # all of the batch in 0
    for _ in range(20):  # 20 steps, a fraction of an epoch on real data
        guard.penalty(merged)
        guard.step()
    assert guard.multipliers[0] > LAMBDA_START * STEP_GROWTH ** 10 and guard.multipliers[1] == 0
    assert guard.penalty(merged).item() > 0
    empty = torch.tensor([[-8.0, 0.0, 0.0, 0.0]]).repeat(10, 1)  # nothing left in 0
    for _ in range(200):
        guard.penalty(empty)
        guard.step()
    assert guard.multipliers[0] == 0 and guard.state()["share_average"][0] < 1
    # the state round-trips through what the checkpoint stores
    again = ShareGuard(targets, 1.15, **{"multipliers": guard.state()["share_multipliers"],
                                        "average": guard.state()["share_average"]})
    assert torch.equal(again.multipliers, guard.multipliers)


def test_unlabelled_targets_remove_the_labelled_points_from_the_prior_share():
    # 1000 points, class 0 expected 300 of them, 60 labelled: 240 of the 940 unlabelled
    targets = unlabelled_targets((0.3, 0.2, 0.5), np.array([60, 40]), n_unlabelled=900)
    np.testing.assert_allclose(targets, [240 / 900, 160 / 900])
    ratios = component_share_ratios(np.array([60, 40, 0]), np.array([540, 160, 200]),
                                    (0.3, 0.2, 0.5), n_labelled=2)
    np.testing.assert_allclose(ratios, [2.0, 1.0])


def test_penalty_pushes_out_only_the_excess_over_the_cap_of_penalised_components():
    logits = torch.zeros(5, 4, requires_grad=True)  # q_bar = 0.25 on every component
    multipliers, targets = torch.tensor([2.0, 0.0]), torch.tensor([0.1, 0.1])
    penalty = share_penalty(logits, multipliers, targets, cap=1.5)
    assert penalty.item() == pytest.approx(2.0 * (0.25 / 0.1 - 1.5))
    penalty.backward()
    grad = logits.grad
    assert (grad[:, 0] > 0).all()  # descent lowers the logit of the penalised component,
    assert (grad[:, 2:] < 0).all()  # raises the extra components' logits
    assert (grad[:, 1] == 0).all()  # and leaves the other labelled component alone
    # within the cap: no force at all, whatever the multiplier
    within = share_penalty(torch.zeros(5, 4), multipliers, torch.tensor([0.2, 0.2]), cap=1.5)
    assert within.item() == 0.0


def test_cap_must_be_off_or_above_one():
    assert ObjectiveConfig(labelled_share_cap=0).labelled_share_cap == 0
    for bad in (1.0, 0.5, -1.0, float("inf")):
        with pytest.raises(ConfigError, match="labelled-share-cap"):
            ObjectiveConfig(labelled_share_cap=bad)
