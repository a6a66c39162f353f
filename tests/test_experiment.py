"""The experiment grid as a library: planning, resume decisions, settings, aggregation maths."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from susl_cli import experiment_runs
from susl_cli.data.sources import Dataset
from susl_cli.errors import ConfigError, UsageError
from susl_cli.experiment import (
    ExperimentConfig,
    ExperimentPlan,
    ExperimentResult,
    parse_names,
    parse_settings,
    plan_experiment,
)
from susl_cli.experiment_masks import DatasetLoader, prepare_masks, restrict_to_classes
from susl_cli.experiment_report import (
    format_mean_sd,
    markdown_text,
    paper_number,
    summarise_cells,
)
from susl_cli.experiment_runs import (
    decide_action,
    schedule_as_planned,
    worker_threads,
)
from susl_cli.metrics import SUMMARY_FIELDS
from susl_cli.models import MODELS
from susl_cli.models.gmdgm import GMDGM
from susl_cli.storage.masked import read_masked_dataset
from susl_cli.train import cosine_lr
from tests.data_helpers import write_tiny_npz


def test_table2_plan_names_every_run_and_mask(tmp_path: Path):
    config = ExperimentConfig("table2", "mnist", tmp_path, seeds=4)
    plan = plan_experiment(config, n_classes=10)
    assert len(plan.runs) == 3 * 2 * 4 and plan.labelled_classes == (0, 1, 2, 3, 4)
    folder = tmp_path / "table2_mnist"
    names = {run.checkpoint for run in plan.runs}
    assert len(names) == 24 and folder / "sus_gmdgm_seed3.h5" in names
    assert {m.path.name for m in plan.masks} == {
        "mask_us_seed0.h5", *(f"mask_{k}_seed{s}.h5" for k in ("ss", "sus") for s in range(4))}
    first = plan.runs[0]
    assert (first.regime, first.model, first.seed) == ("us", "m2", 0)  # seed-major order
    sus = next(r for r in plan.runs if r.regime == "sus" and r.seed == 2)
    assert sus.mask.path == folder / "mask_sus_seed2.h5" and sus.score_classes is None
    us3 = next(r for r in plan.runs if r.regime == "us" and r.seed == 3)
    assert us3.mask.seed == 0  # no labels to draw: one US mask serves every seed
    assert plan_experiment(config, 10) == plan  # deterministic


def test_table1_plan_and_har_first_half(tmp_path: Path):
    plan = plan_experiment(ExperimentConfig("table1", "fashion-mnist", tmp_path, seeds=2), 10)
    assert [(r.regime, r.model, r.seed) for r in plan.runs] == [
        ("ss_known", "m2", 0), ("acc_sus", "m2", 0), ("ss_known", "m2", 1), ("acc_sus", "m2", 1)]
    acc = plan.runs[1]
    assert acc.extra_components == 0 and acc.score_classes == (0, 1, 2, 3, 4)
    assert acc.mask.kind == "sus" and plan.runs[0].mask.kind == "ss_known"
    assert acc.checkpoint.name == "acc_sus_m2_seed0.h5"
    har = plan_experiment(ExperimentConfig("table2", "har", tmp_path, seeds=1,
                                           models=("gmdgm",), regimes=("sus",)), 6)
    assert har.labelled_classes == (0, 1, 2) and len(har.runs) == 1


def test_user_dataset_key_and_extra_components(tmp_path: Path):
    config = ExperimentConfig("table2", str(tmp_path / "My Data.npz"), tmp_path, seeds=1,
                              settings=(("extra_components", 7),))
    assert config.name == "table2_my-data" and config.preset_name is None
    extras = {r.regime: r.extra_components for r in plan_experiment(config, 4).runs}
    assert extras == {"us": 7, "ss": None, "sus": 7}  # SS keeps K = C
    assert ExperimentConfig("table2", "mnist", tmp_path).preset_name == "paper"


@pytest.mark.parametrize("kwargs, message", [
    ({"table": "table3"}, "unknown table"),
    ({"seeds": 0}, "--seeds must be a positive integer"),
    ({"epochs": -1}, "--epochs"),
    ({"jobs": 0}, "--jobs"),
    ({"models": ("vae",)}, "unknown model 'vae'"),
    ({"regimes": ("acc_sus",)}, "table2 regime"),
    ({"dataset": "cifar"}, "unknown dataset 'cifar'"),
    ({"settings": (("epochs", 3),)}, "use --epochs"),
    ({"settings": (("colour", 3),)}, "unknown --set key 'colour'"),
    ({"settings": (("alpha", -1),)}, "--alpha must be >= 0"),
    ({"settings": (("hidden_units", 0),)}, "--hidden-units"),
    ({"table": "table1", "settings": (("extra_components", 3),)}, "table1 fixes"),
    ({"label_fraction": 0.0}, "--label-fraction"),
])
def test_config_rejects_bad_values(tmp_path: Path, kwargs: dict, message: str):
    values = {"table": "table2", "dataset": "mnist", "out_dir": tmp_path, **kwargs}
    with pytest.raises((UsageError, ConfigError), match=message):
        ExperimentConfig(**values)


def test_parse_settings_and_names():
    assert parse_settings(["alpha=10", "learning-rate=1e-3", "kl=sampled"]) == (
        ("alpha", 10), ("kl", "sampled"), ("learning_rate", 0.001))
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_settings(["alpha"])
    assert parse_names(" M2, gmdgm ") == ("m2", "gmdgm")
    assert parse_names("ss-known,acc-sus") == ("ss_known", "acc_sus")
    assert parse_names(None) == ()
    assert parse_names("m2, GMDGM-MF", dash="-") == ("m2", "gmdgm-mf")  # model names keep "-"
    assert worker_threads(1) >= worker_threads(64) == 1


def _fake_meta(monkeypatch: pytest.MonkeyPatch, **meta) -> None:
    monkeypatch.setattr(experiment_runs, "read_checkpoint_meta", lambda path: meta)


def test_decide_action_skips_finished_runs_and_resumes_the_others(tmp_path, monkeypatch):
    run = plan_experiment(ExperimentConfig("table2", "mnist", tmp_path, seeds=1), 10).runs[0]
    assert decide_action(run, 20) == "train"
    run.checkpoint.parent.mkdir(parents=True)
    run.checkpoint.touch()
    _fake_meta(monkeypatch, epoch=20, completed=True, train_config={"epochs": 20})
    assert decide_action(run, 20) == "skip"
    assert decide_action(run, 10) == "skip"  # longer than asked: kept, the CSV says 20
    assert decide_action(run, 40) == "extend"
    _fake_meta(monkeypatch, epoch=7, completed=False, train_config={"epochs": 20})
    assert decide_action(run, 20) == "resume"
    with pytest.raises(ConfigError, match="ask --epochs 20"):
        decide_action(run, 5)


def test_schedule_as_planned_flags_a_restarted_cosine():
    config = SimpleNamespace(learning_rate=1e-3, epochs=4, lr_schedule="cosine")
    planned = [cosine_lr(1e-3, e, 4, "cosine") for e in range(4)]
    run = SimpleNamespace(train_config=config, history={"lr": planned}, epoch=4)
    assert schedule_as_planned(run)
    restarted = [cosine_lr(1e-3, e, 2, "cosine") for e in range(2)] + planned[2:]
    assert not schedule_as_planned(SimpleNamespace(train_config=config,
                                                   history={"lr": restarted}, epoch=4))


def test_restrict_to_classes_relabels_train_and_test():
    y = np.array([0, 3, 1, 2, 3, 0])
    data = Dataset("d", np.arange(12, dtype=np.float32).reshape(6, 2), y, np.zeros((3, 2)),
                   np.array([3, 2, 1]), ("a", "b", "c", "d"), "real", "sha")
    sub = restrict_to_classes(data, (1, 3))
    assert sub.class_names == ("b", "d") and sub.y_train.tolist() == [1, 0, 1]
    assert sub.x_train[:, 0].tolist() == [2.0, 4.0, 8.0] and sub.y_test.tolist() == [1, 0]


def test_table1_masks_share_their_labelled_points_and_are_checked(tmp_path: Path):
    source = write_tiny_npz(tmp_path / "tiny.npz", image=True)
    config = ExperimentConfig("table1", str(source), tmp_path / "out", seeds=1)
    plan = plan_experiment(config, 4)
    loader = DatasetLoader(config.dataset, None)
    sha = prepare_masks(plan.masks, plan.labelled_classes, 4, 0.2, loader)
    known, sus = (read_masked_dataset(m.path) for m in plan.masks)
    assert known.class_names == ("0", "1") and set(known.y_test) == {0, 1}
    assert sus.n_classes == 4 and sus.hidden_classes == (2, 3)
    assert np.array_equal(known.x_train[known.is_labelled], sus.x_train[sus.is_labelled])
    assert len(sha(plan.masks[0].path)) == 64
    with pytest.raises(UsageError, match="label fraction 0.2, expected 0.5"):
        prepare_masks(plan.masks, plan.labelled_classes, 4, 0.5, loader)


def _row(model: str, regime: str, seed: int, acc: float) -> dict:
    metrics = dict.fromkeys(SUMMARY_FIELDS, 0.5)
    metrics.update(cluster_acc_majority=acc, novel_acc_majority=math.nan)
    return {"model": model, "regime": regime, "seed": seed, "epochs": 20,
            "lr_schedule_as_planned": True, "train_seconds": 30.0, **metrics}


def test_summarise_cells_mean_sample_sd_and_paper_numbers():
    rows = [_row("m2", "sus", s, a) for s, a in enumerate((0.50, 0.52, 0.54, 0.56))]
    rows.append(_row("gmdgm", "sus", 0, 0.9))
    cells = summarise_cells(rows, "table2", "mnist")
    assert [(c.model, c.regime, c.n_runs) for c in cells] == [("m2", "sus", 4),
                                                              ("gmdgm", "sus", 1)]
    mean, sd = cells[0].stats["cluster_acc_majority"]
    assert mean == pytest.approx(0.53) and sd == pytest.approx(np.std([.5, .52, .54, .56],
                                                                      ddof=1))
    assert math.isnan(cells[1].stats["cluster_acc_majority"][1])  # one run: no sd
    assert math.isnan(cells[0].stats["novel_acc_majority"][0])
    assert cells[0].paper == (54.3, 0.9) and cells[1].paper == (92.5, 0.3)
    assert format_mean_sd(mean, sd) == "53.0 ± 2.6" and format_mean_sd(0.9, math.nan) == "90.0"
    assert paper_number("table1", "mnist", "m2", "acc_sus") == (97.4, 0.3)
    assert paper_number("table2", "har-features", "gmdgm", "us") == (81.7, 1.8)
    assert paper_number("table2", "tiny", "m2", "us") is None


def test_markdown_describes_itself(tmp_path: Path):
    config = ExperimentConfig("table2", "mnist", tmp_path, seeds=2, models=("m2",),
                              device="cpu", settings=(("alpha", 10),))
    rows = [_row("m2", r, s, 0.6) for s in range(2) for r in ("us", "ss", "sus")]
    plan = ExperimentPlan(config, 10, (0, 1, 2, 3, 4), (), ())
    result = ExperimentResult(plan, [], rows, wall_seconds=75.0)
    text = markdown_text(result, summarise_cells(rows, "table2", "mnist"), "susl experiment x",
                         generated=datetime(2026, 1, 2, 3, 4, tzinfo=UTC))
    assert "Reduced run: 20 epochs, not the paper's 400" in text
    assert text.startswith("### Table 2 on mnist with alpha=10: measured by")  # not the paper's
    assert "| M2 (SSVAE) | measured | 60.0 ± 0.0 | 60.0 ± 0.0 | 60.0 ± 0.0 |" in text
    assert "| M2 (SSVAE) | paper | 26.1 ± 2.8 | 97.6 ± 0.1 | 54.3 ± 0.9 |" in text
    for part in ("`susl experiment x`", "2 seed(s) (0, 1)", "labelled classes 0-4 of 10",
                 "--set alpha=10", "torch ", "3 min 00 s of training", "1 min 15 s",
                 "2026-01-02 03:04 UTC", "majority mapping"):
        assert part in text, part


def test_markdown_names_each_model_by_its_registered_title(tmp_path: Path, monkeypatch):
    extra = type("Extra", (GMDGM,), {"name": "extra", "title": "Extra DGM"})
    monkeypatch.setitem(MODELS, "extra", extra)  # a new model: one registry entry, no more
    models = ("gmdgm-mf", "adgm", "agm-dgm", "extra")
    config = ExperimentConfig("table2", "mnist", tmp_path, seeds=1, models=models, device="cpu")
    rows = [_row(m, "sus", 0, 0.6) for m in models]
    result = ExperimentResult(ExperimentPlan(config, 10, (0, 1, 2, 3, 4), (), ()), [], rows,
                              wall_seconds=1.0)
    text = markdown_text(result, summarise_cells(rows, "table2", "mnist"), "susl experiment x")
    for title in ("GM-DGM (mean-field)", "ADGM", "AGM-DGM", "Extra DGM"):
        assert f"| {title} | measured |" in text and f"| {title} | SUS | 1 |" in text, title
    for name in models:
        assert f"| {name} |" not in text
