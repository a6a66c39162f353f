"""`susl experiment --device cuda`: runs placed on the GPUs by worker slot, and recorded.

Without a GPU the placement is checked on faked GPUs (`fake_gpus`), with a thread pool
standing in for the spawned workers and a stand-in for training; the `gpu`-marked test trains
a real 2-run grid on CUDA (benchmarks/gpu_check.sh runs it).
"""

from __future__ import annotations

import csv
import queue
import threading
from multiprocessing.pool import ThreadPool
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from susl_cli import experiment_runs
from susl_cli.cli import app
from susl_cli.experiment_runs import RunOutcome, RunTask
from susl_cli.metrics import SUMMARY_FIELDS
from tests.data_helpers import assert_one_line_error, write_tiny_npz

TINY = ["--seeds", "1", "--epochs", "1", "--set", "hidden_units=8", "--set", "latent_dim=2",
        "--set", "batch_size=50", "--set", "labelled_batch_size=20"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class FakeTraining:
    """Stands in for execute_run: records (thread, device) and returns a plausible row. The
    first `together` runs wait for each other, so they are in flight at the same time, each
    in a worker of its own."""

    def __init__(self, together: int) -> None:
        self.calls: list[tuple[int, str]] = []
        self.barrier = threading.Barrier(together, timeout=20)
        self.lock = threading.Lock()

    def __call__(self, task: RunTask) -> RunOutcome:
        with self.lock:
            self.calls.append((threading.get_ident(), task.device))
            first = len(self.calls) <= self.barrier.parties
        if first:
            self.barrier.wait()
        run = task.run
        row = {"table": task.table, "dataset": task.dataset, "model": run.model,
               "regime": run.regime, "seed": run.seed, "epochs": 1, "completed": True,
               "lr_schedule_as_planned": True, "train_seconds": 0.5, "device": task.device,
               **dict.fromkeys(SUMMARY_FIELDS, 0.5)}
        return RunOutcome(run, task.action, row, None, 0.5)


@pytest.fixture
def threaded_grid(monkeypatch: pytest.MonkeyPatch):
    """Worker 'processes' are threads (same Pool and Queue interface); CUDA calls a worker
    makes are recorded instead of reaching a GPU."""
    chosen: list[str] = []
    monkeypatch.setattr(experiment_runs.multiprocessing, "get_context",
                        lambda method: SimpleNamespace(Pool=ThreadPool, Queue=queue.Queue))
    monkeypatch.setattr(experiment_runs, "tune_cpu", lambda: None)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def _grid(runner, tmp_path: Path, table: str, *flags: str):
    """`susl experiment TABLE` on the tiny image set with the tiny settings and `flags`."""
    return runner.invoke(app, ["experiment", table, "--dataset",
                               str(write_tiny_npz(tmp_path / "tiny.npz", image=True)),
                               *TINY, *flags])


def test_concurrent_runs_spread_over_the_gpus_and_are_recorded(tmp_path: Path, runner,
                                                               fake_gpus, threaded_grid,
                                                               monkeypatch: pytest.MonkeyPatch):
    fake_gpus(2)
    training = FakeTraining(together=4)
    monkeypatch.setattr(experiment_runs, "execute_run", training)
    out = tmp_path / "grid"
    result = _grid(runner, tmp_path, "table2", "--device", "cuda", "--jobs", "4", "--quiet",
                   "--out", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    # 6 runs on 4 worker slots: slot s keeps cuda:(s mod 2) for its life, so the first 4
    # runs, in flight together, sit 2 on each GPU.
    assert len(training.calls) == 6
    device_of = {}
    for thread, device in training.calls:
        assert device_of.setdefault(thread, device) == device  # a worker never changes GPU
    first = [device for _, device in training.calls[:4]]
    assert sorted(first) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert sorted(threaded_grid) == sorted(d for _, d in training.calls)
    rows = _rows(out / "table2_tiny.csv")
    assert sorted(r["device"] for r in rows) == sorted(d for _, d in training.calls)
    markdown = (out / "table2_tiny.md").read_text()
    assert "; 2 x NVIDIA H200, 4 jobs (2 per GPU);" in markdown
    assert "--jobs 4 --device cuda" in markdown


def test_cuda_defaults_to_one_job_per_gpu(tmp_path: Path, runner, fake_gpus, threaded_grid,
                                         monkeypatch: pytest.MonkeyPatch):
    fake_gpus(3)
    training = FakeTraining(together=2)
    monkeypatch.setattr(experiment_runs, "execute_run", training)
    out = tmp_path / "t1"
    result = _grid(runner, tmp_path, "table1", "--device", "auto", "--quiet", "--out", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    assert sorted(d for _, d in training.calls) == ["cuda:0", "cuda:1"]  # 2 runs, 2 workers
    markdown = (out / "table1_tiny.md").read_text()
    assert "; 3 x NVIDIA H200, 3 jobs (1 per GPU);" in markdown
    assert "--jobs 3 --device auto" in markdown


def test_cuda_without_a_gpu_is_one_line_and_makes_nothing(tmp_path: Path, runner, fake_gpus):
    fake_gpus(0)
    out = tmp_path / "never"
    result = _grid(runner, tmp_path, "table1", "--device", "cuda", "--jobs", "2", "--out", str(out))
    assert_one_line_error(result, contains="no CUDA GPU is available: use --device cpu")
    assert not out.exists()


def test_help_states_the_placement_rule(runner):
    result = runner.invoke(app, ["experiment", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())  # the help column, unwrapped
    assert "one per GPU on CUDA" in text and "cuda:(s mod G)" in text


@pytest.mark.gpu
def test_a_two_run_grid_trains_on_cuda(tmp_path: Path, runner):
    out = tmp_path / "cuda-grid"
    result = _grid(runner, tmp_path, "table1", "--device", "cuda", "--jobs", "2", "--quiet",
                   "--out", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    gpus = torch.cuda.device_count()
    rows = _rows(out / "table1_tiny.csv")
    assert [r["regime"] for r in rows] == ["ss_known", "acc_sus"]
    assert {r["device"] for r in rows} <= {f"cuda:{i}" for i in range(min(2, gpus))}
    assert all(r["completed"] == "True" and r["epochs"] == "1" for r in rows)
    used = min(2, gpus)
    name = torch.cuda.get_device_name(0)
    markdown = (out / "table1_tiny.md").read_text()
    assert f"{used} x {name}" in markdown and "2 jobs" in markdown
