"""Streamed training (training_data.py): the memory check that picks the path and says so,
the block shuffle, batches and diagnostics equal to the in-memory ones, a trained model of
the same quality, determinism and resume (each DDP process reading only its own rows:
tests/test_distributed.py)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from susl_cli import training_data
from susl_cli.cli import app
from susl_cli.diagnostics import assignment_counts
from susl_cli.errors import SuslError
from susl_cli.resources import format_bytes
from susl_cli.runs import load_model
from susl_cli.storage.masked import read_masked_dataset
from susl_cli.storage.rows import train_layout
from susl_cli.train import train_mask_file
from susl_cli.training_data import (
    IN_MEMORY_COPIES,
    StreamedRows,
    plan_data,
    prepare_data,
)
from tests.data_helpers import mask_file, write_tiny_npz
from tests.ddp_worker import STREAM_OPTIONS, STREAM_OVERRIDES

CPU = torch.device("cpu")
TRAIN = ["--batch-size", "20", "--labelled-batch-size", "10", "--extra-components", "4",
         "--hidden-units", "16", "--latent-dim", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_mask(tmp_path_factory) -> Path:
    """The conftest's tiny 6x6 'images' (4 classes, 0-1 labelled) as mask.h5, the name the
    data-path descriptions below quote."""
    folder = tmp_path_factory.mktemp("stream")
    return mask_file(write_tiny_npz(folder / "tiny.npz", image=True), folder / "mask.h5")


def _free(monkeypatch, n_bytes: int | None) -> None:
    """Pretend this much memory is free, for the data plan only."""
    monkeypatch.setattr(training_data, "device_memory", lambda where: n_bytes)


# -- the plan -------------------------------------------------------------------------------

def test_the_plan_streams_when_the_rows_would_not_fit_and_says_which_path(
        tiny_mask, monkeypatch) -> None:
    n_rows, shape, chunk = train_layout(tiny_mask)
    need = IN_MEMORY_COPIES * n_rows * int(np.prod(shape)) * 4
    _free(monkeypatch, 1000)
    plan = plan_data(tiny_mask, CPU, None)
    assert plan.streamed and plan.need_bytes == need and plan.block_rows == chunk
    assert plan.describe() == (f"streamed from mask.h5 in blocks of {chunk:,} rows (in memory "
                               f"it needs ~{format_bytes(need)}, 1000 bytes free)")
    assert plan_data(tiny_mask, CPU, False).describe() == (
        f"in memory (--no-stream; needs ~{format_bytes(need)}, 1000 bytes free)")
    _free(monkeypatch, 10**12)
    assert plan_data(tiny_mask, CPU, None).describe() == (
        f"in memory (needs ~{format_bytes(need)}, {format_bytes(10**12)} free)")
    assert plan_data(tiny_mask, CPU, True).describe().startswith(
        f"streamed from mask.h5 in blocks of {chunk:,} rows (--stream; in memory it needs")
    _free(monkeypatch, None)  # the OS does not say: in memory, as before
    assert plan_data(tiny_mask, CPU, None).describe().endswith("free memory unknown)")


def test_a_tight_budget_streams_and_no_stream_overrides_it_in_the_summary(
        tiny_mask, tmp_path, runner, monkeypatch) -> None:
    _free(monkeypatch, 1000)
    result = runner.invoke(app, ["train", str(tiny_mask), *TRAIN, "--epochs", "1",
                                 "--out", str(tmp_path / "s.h5")])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "│ data" in line)
    assert "streamed from mask.h5 in blocks of" in row and "1000 bytes free" in row
    result = runner.invoke(app, ["train", str(tiny_mask), *TRAIN, "--epochs", "1", "--json",
                                 "--no-stream", "--out", str(tmp_path / "m.h5")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data"].startswith("in memory (--no-stream; needs ~")
    assert load_model(tmp_path / "m.h5").meta.data_path.startswith("in memory (--no-stream")
    help_text = runner.invoke(app, ["train", "--help"]).output
    assert "--stream" in help_text and "--no-stream" in help_text


# -- the block shuffle ----------------------------------------------------------------------

def test_the_block_shuffle_visits_every_row_once_window_by_window() -> None:
    file_rows = np.array([r for r in range(200) if r % 7])  # labelled rows left out
    rows = StreamedRows(SimpleNamespace(chunk_rows=10, shape=(200, 3)), file_rows, None, CPU,
                        window_bytes=10 * 3 * 4 * 5)  # 5 blocks of 10 rows of 3 floats
    assert rows.window_blocks == 5
    order = rows.order(torch.Generator().manual_seed(5)).numpy()
    assert sorted(order) == list(range(len(file_rows)))
    np.testing.assert_array_equal(order, rows.order(torch.Generator().manual_seed(5)))
    assert not np.array_equal(order, rows.order(torch.Generator().manual_seed(6)))
    # the first window: every row of 5 blocks, shuffled, before any other row
    blocks = file_rows[order] // 10
    first = list(dict.fromkeys(blocks))[:5]
    size = int(np.isin(file_rows // 10, first).sum())
    assert set(blocks[:size]) == set(first) and not set(blocks[size:]) & set(first)
    assert not np.all(np.diff(order[:size]) > 0)


# -- batches, diagnostics, quality, determinism, resume -------------------------------------

def test_streamed_training_matches_in_memory_quality(tiny_mask, tmp_path, runner) -> None:
    scores = {}
    for flag in ("--stream", "--no-stream"):
        out = tmp_path / f"run{flag}.h5"
        result = runner.invoke(app, ["train", str(tiny_mask), *TRAIN, "--epochs", "10",
                                     "--learning-rate", "0.03", flag, "--json", "--quiet",
                                     "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["data"].startswith(
            "streamed from mask.h5" if flag == "--stream" else "in memory (--no-stream")
        result = runner.invoke(app, ["evaluate", str(out), "--json"])
        scores[flag] = json.loads(result.stdout)["runs"][0]["metrics"]
    # Only the batch order differs (block shuffle vs full shuffle). On this tiny set the
    # clustering of the test points swings with the order of batches (seeds 0-3 of either
    # path), so the bar is: labelled accuracy as good, the final objective within 10%, and
    # at most 4 of the 40 test points worse clustered.
    streamed, memory = scores["--stream"], scores["--no-stream"]
    assert streamed["known_acc_classifier"] == memory["known_acc_classifier"]
    assert streamed["cluster_acc_hungarian"] >= memory["cluster_acc_hungarian"] - 0.1
    losses = [load_model(tmp_path / f"run{f}.h5").history["loss"][-1]
              for f in ("--stream", "--no-stream")]
    assert losses[0] == pytest.approx(losses[1], rel=0.1)
    # the same model reads the same rows and diagnostics both ways
    run = load_model(tmp_path / "run--stream.h5")
    in_memory = read_masked_dataset(tiny_mask)
    on_disk = read_masked_dataset(tiny_mask, stream_cache_bytes=1 << 20)
    whole = prepare_data(run, in_memory.x_train, in_memory.y_observed, CPU)
    streamed_data = prepare_data(run, on_disk.x_train, on_disk.y_observed, CPU)
    with contextlib.closing(streamed_data):
        assert isinstance(streamed_data.x_unlabelled, StreamedRows)
        idx = torch.tensor([5, 0, 179, 42, 42])
        torch.testing.assert_close(streamed_data.unlabelled_batch(idx),
                                   whole.unlabelled_batch(idx))
        torch.testing.assert_close(streamed_data.x_labelled, whole.x_labelled)
        # the label evidence (on by default here) reads the streamed rows to the same targets
        assert whole.evidence_targets is not None
        torch.testing.assert_close(streamed_data.evidence_targets, whole.evidence_targets)
        for mine, theirs in zip(assignment_counts(run.model, whole.x_labelled,
                                                  whole.x_unlabelled),
                                assignment_counts(run.model, streamed_data.x_labelled,
                                                  streamed_data.x_unlabelled, batch=7),
                                strict=True):
            np.testing.assert_array_equal(mine, theirs)


class _StopAt:
    """An observer that presses Ctrl-C when epoch `epoch` starts."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt

    def steps_done(self, n: int) -> None: ...
    def running_loss(self, loss: float) -> None: ...
    def epoch_finished(self, record: dict[str, float]) -> None: ...


def _streamed(mask: Path, out: Path, **kwargs) -> None:
    train_mask_file(mask, out, options=STREAM_OPTIONS, train_overrides={
        **STREAM_OVERRIDES, "epochs": 3, "checkpoint_seconds": 0.0}, device="cpu", stream=True,
        **kwargs)


def test_streamed_runs_are_deterministic_and_resume_where_they_stopped(
        tiny_mask, tmp_path) -> None:
    one, two, stopped = tmp_path / "one.h5", tmp_path / "two.h5", tmp_path / "stopped.h5"
    _streamed(tiny_mask, one)
    _streamed(tiny_mask, two)
    with pytest.raises(SuslError, match="interrupted during epoch 3"):
        _streamed(tiny_mask, stopped, observer=_StopAt(3))
    assert load_model(stopped).epoch == 2
    _streamed(tiny_mask, stopped, resume=True)
    runs = [load_model(p) for p in (one, two, stopped)]
    assert runs[2].epoch == 3 and runs[0].meta.data_path.startswith("streamed from")
    for run in runs[1:]:
        for key in ("loss", "train_labelled_acc", "components_used"):
            assert run.history[key] == runs[0].history[key], key
        for a, b in zip(runs[0].model.parameters(), run.model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
