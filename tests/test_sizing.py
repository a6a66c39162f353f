"""Settings chosen by data size (susl_cli/sizing.py), how `susl train` states them, and that
`--preset paper` keeps the paper's settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from susl_cli.cli import app
from susl_cli.config import ObjectiveConfig
from susl_cli.runs import load_model
from susl_cli.sizing import (
    LABEL_EVIDENCE,
    LARGE_Y_ESTIMATOR,
    MARGINAL_KL,
    MAX_EPOCHS,
    MAX_EXTRA,
    MEAN_FIELD_STEPS,
    MIN_BATCH,
    MIN_EXTRA,
    SMALL_LATENT,
    SMALL_MODEL,
    SMALL_ROWS,
    TARGET_STEPS,
    choose_by_size,
)


@pytest.mark.parametrize("n_unlabelled", [30, 166, 900, 1_350, 5_000, 9_999])
def test_small_data_gets_fewer_components_smaller_batches_and_enough_steps(n_unlabelled):
    choice = choose_by_size(n_unlabelled, has_hidden=True, user_train={}, user_extra=None)
    extra, batch, epochs = (choice.extra_components, choice.train["batch_size"],
                            choice.train["epochs"])
    assert MIN_EXTRA <= extra <= MAX_EXTRA and extra <= max(n_unlabelled // 20, MIN_EXTRA)
    assert choice.train["labelled_batch_size"] == batch >= MIN_BATCH
    steps_per_epoch = -(-n_unlabelled // batch)
    assert steps_per_epoch * epochs >= TARGET_STEPS or epochs == MAX_EPOCHS
    assert choice.train["marginal_kl"] == MARGINAL_KL
    assert choice.train["label_evidence"] == LABEL_EVIDENCE
    assert choice.model == SMALL_MODEL and choice.settings == {"latent_dim": SMALL_LATENT}
    assert steps_per_epoch * epochs >= MEAN_FIELD_STEPS or epochs == MAX_EPOCHS
    assert len(choice.reasons) == 7 and all(str(n_unlabelled) in r for r in choice.reasons[2:])


def test_a_model_the_user_picks_keeps_the_shorter_run_and_its_own_settings():
    choice = choose_by_size(1_350, has_hidden=True, user_train={}, user_extra=None,
                            user_model="gmdgm", user_settings=frozenset({"latent_dim"}))
    assert choice.model is None and choice.settings == {}
    steps = -(-1_350 // choice.train["batch_size"]) * choice.train["epochs"]
    assert TARGET_STEPS <= steps < MEAN_FIELD_STEPS


def test_large_data_keeps_the_paper_sizes_and_only_adds_the_objective_terms():
    choice = choose_by_size(SMALL_ROWS, has_hidden=True, user_train={}, user_extra=None)
    assert choice.train == {"marginal_kl": MARGINAL_KL, "label_evidence": LABEL_EVIDENCE,
                            "y_estimator": LARGE_Y_ESTIMATOR}
    assert choice.extra_components is None and choice.model is None and choice.settings == {}
    assert any(r.startswith(f"y estimator {LARGE_Y_ESTIMATOR}") for r in choice.reasons)


def test_the_y_estimator_is_left_alone_when_set_or_unused_or_on_small_data():
    for user_train, user_model, n in (({"y_estimator": "enumerate"}, None, SMALL_ROWS),
                                      ({}, SMALL_MODEL, SMALL_ROWS),  # exact, one pass anyway
                                      ({}, None, SMALL_ROWS - 1)):  # gmdgm-mf is chosen
        choice = choose_by_size(n, has_hidden=True, user_train=user_train, user_extra=None,
                                user_model=user_model)
        assert "y_estimator" not in choice.train


def test_label_evidence_only_where_labelled_and_new_classes_can_both_be():
    for has_hidden, has_labelled in ((False, True), (True, False)):  # SS, US
        choice = choose_by_size(SMALL_ROWS, has_hidden=has_hidden, user_train={},
                                user_extra=None, has_labelled=has_labelled)
        assert "label_evidence" not in choice.train
        assert not any("label evidence" in r for r in choice.reasons)


def test_every_value_the_user_sets_wins():
    user = {"marginal_kl": 0.0, "batch_size": 50, "epochs": 3, "label_evidence": 0.0}
    choice = choose_by_size(500, has_hidden=True, user_train=user, user_extra=7,
                            user_model="m2", user_settings=frozenset({"latent_dim"}))
    assert choice.extra_components is None and choice.model is None
    assert choice.train == {} and choice.settings == {} and choice.reasons == ()
    # semi-supervised (no hidden class): the component count is not ours to choose
    assert choose_by_size(500, has_hidden=False, user_train={}, user_extra=None
                          ).extra_components is None


@pytest.fixture
def small_mask(tmp_path: Path, runner) -> Path:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 6))
    y = np.repeat(np.arange(4), 40)
    x = (centres[y] + rng.normal(0, 0.5, (len(y), 6))).astype(np.float32)
    np.savez(tmp_path / "small.npz", x=x, y=y)
    out = tmp_path / "small-mask.h5"
    result = runner.invoke(app, ["mask", "--dataset", str(tmp_path / "small.npz"),
                                 "--labelled-classes", "0-1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_train_states_what_it_chose_for_small_data(small_mask, tmp_path, runner):
    out = tmp_path / "run.h5"
    result = runner.invoke(app, ["train", str(small_mask), "--epochs", "2", "--out", str(out),
                                 "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    n_unlabelled = 160 - 16  # 20% of the 80 points of the two labelled classes carry labels
    expected = choose_by_size(n_unlabelled, True, {"epochs": 2}, None)
    assert summary["chosen"] == list(expected.reasons)
    run = load_model(out)
    assert run.model_config.n_components == 2 + expected.extra_components
    assert run.model_config.model == SMALL_MODEL and run.model_config.latent_dim == SMALL_LATENT
    # the merge guard stays opt-in (README "Choices": it costs labelled accuracy early on)
    assert run.model.objective.labelled_share_cap == 0
    assert run.train_config.batch_size == expected.train["batch_size"]
    assert run.model.objective.marginal_kl == MARGINAL_KL and run.train_config.epochs == 2
    assert run.model.objective.label_evidence == LABEL_EVIDENCE
    assert summary["label_evidence"] == run.meta.label_evidence
    assert "your labelled rows put" in run.meta.label_evidence
    assert "merge guard" not in result.output  # the table is not printed under --json
    table = runner.invoke(app, ["train", str(small_mask), "--epochs", "1", "--out", str(out),
                                "--overwrite", "--device", "cpu"], terminal_width=200)
    assert "chosen for you" in table.output and "extra components" in table.output
    assert "label evidence" in table.output and "your labelled rows put" in table.output


def test_preset_paper_keeps_the_papers_objective_and_components(small_mask, tmp_path, runner,
                                                                monkeypatch):
    import susl_cli.run_setup as run_setup
    from susl_cli.config import PAPER_PRESETS, Preset

    # the tiny user file borrows a Table A.1 entry so that --preset paper applies to it
    monkeypatch.setitem(PAPER_PRESETS, "small.npz", Preset(5, 16, 32, 1e-3))
    monkeypatch.setattr(run_setup, "PAPER_PRESETS", PAPER_PRESETS)
    out = tmp_path / "paper.h5"
    result = runner.invoke(app, ["train", str(small_mask), "--epochs", "1", "--preset", "paper",
                                 "--out", str(out), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    run = load_model(out)
    assert json.loads(result.output)["chosen"] == []
    assert run.model_config.n_components == 2 + 40  # the paper's n_aug
    assert run.model.objective.marginal_kl == 0 == run.model.objective.label_evidence
    assert run.meta.label_evidence is None
    assert run.model.objective.labelled_share_cap == ObjectiveConfig().labelled_share_cap == 0
