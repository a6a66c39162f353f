"""`susl experiment` through the CLI runner on a tiny user dataset (4 classes, 6x6 'images')."""

from __future__ import annotations

import csv
import json
import pickle
import queue
from multiprocessing.pool import ThreadPool
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from susl_cli import experiment_runs
from susl_cli.cli import app
from susl_cli.config import ObjectiveConfig
from susl_cli.experiment import ExperimentConfig, make_tasks, plan_experiment
from tests.data_helpers import assert_one_line_error, write_tiny_npz

TINY = ["--seeds", "1", "--epochs", "1", "--device", "cpu", "--set", "hidden_units=8",
        "--set", "latent_dim=2", "--set", "batch_size=50", "--set", "labelled_batch_size=20"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core box the thread barriers
    of every op (Adam's fused step most of all) cost more than the arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    return write_tiny_npz(tmp_path / "tiny.npz", image=True)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_table2_grid_writes_tables_then_resumes(tiny_npz: Path, tmp_path: Path, runner):
    out = tmp_path / "results"
    args = ["experiment", "table2", "--dataset", str(tiny_npz), *TINY,
            "--set", "extra_components=4", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + result.stderr
    assert "wrote" in result.stdout and "reduced run" in result.stdout
    rows = _rows(out / "table2_tiny.csv")
    assert [(r["model"], r["regime"], r["seed"]) for r in rows] == [
        (m, g, "0") for g in ("us", "ss", "sus") for m in ("m2", "gmdgm")]
    assert {r["epochs"] for r in rows} == {"1"} and {r["n_points"] for r in rows} == {"40"}
    assert {r["n_components"] for r in rows} == {"4", "6"}  # SS: K = C; US/SUS: 2 + 4 extra
    folder = out / "table2_tiny"
    assert sorted(p.name for p in folder.glob("mask_*.h5")) == [
        "mask_ss_seed0.h5", "mask_sus_seed0.h5", "mask_us_seed0.h5"]
    checkpoints = sorted(folder.glob("*_seed0.h5"))
    assert len(checkpoints) == 9
    markdown = (out / "table2_tiny.md").read_text()
    assert "| M2 (SSVAE) | measured |" in markdown and "| GM-DGM | paper | — | — | — |" in markdown
    assert "Reduced run: 1 epoch, not the paper's 400" in markdown
    assert "--set extra_components=4" in markdown and "Hardware: CPU" in markdown
    assert "; 1 job on the CPU;" in markdown and "--jobs 1 --device cpu" in markdown

    stamps = {p: p.stat().st_mtime_ns for p in checkpoints}
    again = runner.invoke(app, [*args, "--json"])
    assert again.exit_code == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == stamps  # every run skipped
    payload = json.loads(again.stdout)
    assert len(payload["runs"]) == 6 and len(payload["cells"]) == 6
    assert payload["csv"] == str(out / "table2_tiny.csv")

    longer = [a if a != "1" or args[i - 1] != "--epochs" else "2" for i, a in enumerate(args)]
    extended = runner.invoke(app, [*longer, "--models", "m2", "--regimes", "ss", "--quiet"])
    assert extended.exit_code == 0, extended.stderr
    assert _rows(out / "table2_tiny.csv")[0]["epochs"] == "2"
    assert (folder / "ss_m2_seed0.h5").stat().st_mtime_ns != stamps[folder / "ss_m2_seed0.h5"]

    changed = runner.invoke(app, [*args, "--set", "alpha=3"])
    stored = ObjectiveConfig().alpha
    assert_one_line_error(changed,
                          contains=f"trained with alpha={stored}, this experiment asks alpha=3")


def test_table1_scores_the_labelled_classes_only(tiny_npz: Path, tmp_path: Path, runner,
                                                 monkeypatch: pytest.MonkeyPatch):
    # --jobs 2 through a thread pool standing in for the spawn pool (same Pool interface):
    # spawning two interpreters that import torch would cost more than the whole test.
    threads: list[int] = []
    monkeypatch.setattr(experiment_runs.multiprocessing, "get_context",
                        lambda method: SimpleNamespace(Pool=ThreadPool, Queue=queue.Queue))
    monkeypatch.setattr(experiment_runs, "_init_worker", lambda n, slots: threads.append(n))
    out = tmp_path / "t1"
    result = runner.invoke(app, ["experiment", "table1", "--dataset", str(tiny_npz), *TINY,
                                 "--jobs", "2", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["runs"]
    assert [r["regime"] for r in rows] == ["ss_known", "acc_sus"]  # plan order kept
    assert threads == [experiment_runs.worker_threads(2)] * 2
    # Labelled classes are the first half, {0, 1}: 10 test points each; K = 2 in both arms.
    assert [(r["n_points"], r["n_components"]) for r in rows] == [(20, 2), (20, 2)]
    assert all(r["novel_acc_majority"] is None for r in rows)
    assert [r["device"] for r in rows] == ["cpu", "cpu"]
    markdown = (out / "table1_tiny.md").read_text()
    assert "accidental SUS" in markdown and "--jobs 2" in markdown
    assert "; 2 jobs on the CPU;" in markdown
    assert len(_rows(out / "table1_tiny.csv")) == 2


@pytest.mark.parametrize("args, message", [
    (["table3", "--dataset", "mnist"], "unknown table 'table3'"),
    (["table2", "--dataset", "cifar10"], "unknown dataset 'cifar10'"),
    (["table2", "--dataset", "mnist", "--seeds", "0"], "--seeds must be a positive integer"),
    (["table2", "--dataset", "mnist", "--models", "m3"], "unknown model 'm3'"),
    (["table1", "--dataset", "mnist", "--regimes", "us"], "unknown table1 regime 'us'"),
    (["table2", "--dataset", "mnist", "--set", "alpha"], "--set expects KEY=VALUE"),
    (["table2", "--dataset", "mnist", "--set", "seed=3"], "use --seeds"),
])
def test_bad_input_is_one_line(args: list[str], message: str, tmp_path: Path, runner):
    out = tmp_path / "never"
    result = runner.invoke(app, ["experiment", *args, "--out", str(out)])
    assert_one_line_error(result, contains=message)
    assert not out.exists()


def test_missing_user_file_is_one_line(tmp_path: Path, runner):
    result = runner.invoke(app, ["experiment", "table2", "--dataset",
                                 str(tmp_path / "absent.npz"), "--out", str(tmp_path / "o")])
    assert_one_line_error(result, contains="absent.npz")
    assert not (tmp_path / "o").exists()  # nothing is made before the data are read


def test_help_lists_the_options(runner):
    result = runner.invoke(app, ["experiment", "--help"])
    assert result.exit_code == 0
    for flag in ("--dataset", "--seeds", "--epochs", "--models", "--regimes", "--jobs",
                 "--set", "--out", "--json"):
        assert flag in result.stdout


def test_worker_tasks_pickle_for_spawned_processes(tmp_path: Path):
    config = ExperimentConfig("table2", "mnist", tmp_path, seeds=1, settings=(("alpha", 5),))
    tasks = make_tasks(plan_experiment(config, 10), mask_sha=lambda path: "")
    assert {t.action for t in tasks} == {"train"} and tasks[0].preset == "paper"
    assert pickle.loads(pickle.dumps(tasks)) == tasks
    assert pickle.loads(pickle.dumps(experiment_runs.execute_run)) is experiment_runs.execute_run


def test_terminal_table_names_each_model_by_its_registered_title(tmp_path: Path):
    from rich.console import Console

    from susl_cli.cli.experiment_command import _cells_table
    from susl_cli.experiment_report import summarise_cells
    from susl_cli.metrics import SUMMARY_FIELDS

    models = ("m2", "gmdgm", "gmdgm-mf", "adgm", "agm-dgm")
    rows = [{"model": m, "regime": "sus", "seed": 0, **dict.fromkeys(SUMMARY_FIELDS, 0.5)}
            for m in models]
    config = ExperimentConfig("table2", "mnist", tmp_path, seeds=1, models=models)
    console = Console(record=True, width=200)
    console.print(_cells_table(config, summarise_cells(rows, "table2", "mnist")))
    first_cells = [line.split("│")[1].strip() for line in console.export_text().splitlines()
                   if line.count("│") > 2]  # the body's rows (the header has ┃)
    assert first_cells == ["M2 (SSVAE)", "GM-DGM", "GM-DGM (mean-field)", "ADGM", "AGM-DGM"]


def test_batch_seeds_trains_each_cell_as_one_batch_with_the_same_results(
        tiny_npz: Path, tmp_path: Path, runner, monkeypatch: pytest.MonkeyPatch):
    import numpy as np

    from susl_cli import seed_batch
    from susl_cli.runs import load_model

    batched_calls: list[list[int]] = []
    fit_seeds = seed_batch.fit_seeds

    def recording(runs, *args, **kwargs):
        batched_calls.append([r.train_config.seed for r in runs])
        return fit_seeds(runs, *args, **kwargs)

    monkeypatch.setattr(seed_batch, "fit_seeds", recording)
    # --jobs 2 (below) through a pool of one thread standing in for the spawn pool: threads
    # would share torch's global RNG, which seeds each run's initialisation (processes do not)
    monkeypatch.setattr(experiment_runs.multiprocessing, "get_context",
                        lambda method: SimpleNamespace(Pool=lambda n, **kw: ThreadPool(1, **kw),
                                                       Queue=queue.Queue))
    monkeypatch.setattr(experiment_runs, "_init_worker", lambda n, slots: None)
    grid = ["experiment", "table2", "--dataset", str(tiny_npz), "--seeds", "2", "--epochs",
            "2", "--device", "cpu", "--models", "gmdgm", "--regimes", "us,sus",
            "--set", "hidden_units=8", "--set", "latent_dim=2", "--set", "batch_size=50",
            "--set", "labelled_batch_size=20", "--set", "extra_components=4", "--quiet"]
    alone = runner.invoke(app, [*grid, "--out", str(tmp_path / "alone")])
    assert alone.exit_code == 0, alone.stderr
    assert batched_calls == []  # off by default
    batched = runner.invoke(app, [*grid, "--out", str(tmp_path / "batched"), "--batch-seeds",
                                  "--jobs", "2"])
    assert batched.exit_code == 0, batched.stderr
    # each cell's seeds as one batch, a worker each: US shares one mask, SUS has one per seed
    assert batched_calls == [[0, 1], [0, 1]]
    assert "--batch-seeds" in (tmp_path / "batched" / "table2_tiny.md").read_text()
    rows_alone = _rows(tmp_path / "alone" / "table2_tiny.csv")
    rows_batched = _rows(tmp_path / "batched" / "table2_tiny.csv")
    assert len(rows_alone) == len(rows_batched) == 4
    for a, b in zip(rows_alone, rows_batched, strict=True):
        assert (a["regime"], a["seed"], a["epochs"], a["completed"]) == \
            (b["regime"], b["seed"], b["epochs"], b["completed"])
        run_a, run_b = load_model(Path(a["checkpoint"])), load_model(Path(b["checkpoint"]))
        assert run_b.meta.seed == int(b["seed"]) and run_b.meta.discovery == run_a.meta.discovery
        for key, value in run_a.model.state_dict().items():
            np.testing.assert_allclose(run_b.model.state_dict()[key], value, rtol=1e-4,
                                       atol=1e-5, err_msg=key)


def test_seed_groups_join_a_cells_seeds_to_train_only(tmp_path: Path):
    config = ExperimentConfig(table="table2", dataset="mnist", out_dir=tmp_path, seeds=3,
                              epochs=1, models=("m2", "gmdgm"), regimes=("us", "sus"))
    tasks = make_tasks(plan_experiment(config, 10), lambda path: "sha")
    assert [len(u) for u in experiment_runs.seed_groups(tasks, False)] == [1] * 12
    units = experiment_runs.seed_groups(tasks, True)
    assert sorted(len(u) for u in units) == [3, 3, 3, 3]
    for unit in units:
        assert len({(t.run.regime, t.run.model) for t in unit}) == 1
        assert [t.run.seed for t in unit] == [0, 1, 2]
    skipped = [tasks[0].__class__(**{**tasks[0].__dict__, "action": "skip"}), *tasks[1:]]
    assert sorted(len(u) for u in experiment_runs.seed_groups(skipped, True)) == [1, 2, 3, 3, 3]
