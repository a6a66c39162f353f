"""Training on purpose past the end (a stated warm restart) and checkpoints by time."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from susl_cli import train as train_module
from susl_cli.cli import app
from susl_cli.config import TrainConfig
from susl_cli.runs import ModelOptions, load_model
from susl_cli.train import SilentObserver, TrainingInterrupted, scheduled_lr, train_mask_file

TINY = ["--batch-size", "20", "--labelled-batch-size", "10", "--extra-components", "2",
        "--hidden-units", "16", "--latent-dim", "2", "--device", "cpu"]
OVERRIDES = {"batch_size": 20, "labelled_batch_size": 10}
OPTIONS = ModelOptions(extra_components=2, settings={"hidden_units": 16, "latent_dim": 2})


@pytest.fixture
def mask(tmp_path: Path, runner) -> Path:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = np.clip(rng.uniform(0.1, 0.9, (3, 20))[y] + rng.normal(0, 0.05, (120, 20)), 0, 1)
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=y)
    out = tmp_path / "mask.h5"
    result = runner.invoke(app, ["mask", "--dataset", str(tmp_path / "d.npz"),
                                 "--labelled-classes", "0-1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_scheduled_lr_is_one_cosine_then_a_warm_restart():
    plain = TrainConfig(epochs=10, learning_rate=1.0)
    assert [scheduled_lr(plain, e) for e in range(10)] == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * e / 10)) for e in range(10)])
    extended = TrainConfig(epochs=15, learning_rate=1.0, lr_cycle_start=10)
    # the first 10 epochs keep the schedule they were trained with (no rewrite of history)
    assert [scheduled_lr(extended, e) for e in range(10)] == [scheduled_lr(plain, e)
                                                              for e in range(10)]
    assert [scheduled_lr(extended, e) for e in range(10, 15)] == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * e / 5)) for e in range(5)])


def test_resume_with_more_epochs_on_a_finished_run_is_a_stated_warm_restart(mask, tmp_path,
                                                                           runner):
    out = tmp_path / "run.h5"
    base = ["train", str(mask), "--out", str(out), "--learning-rate", "0.01", *TINY]
    assert runner.invoke(app, [*base, "--epochs", "3", "--quiet"]).exit_code == 0
    result = runner.invoke(app, [*base, "--epochs", "5", "--resume"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "warm restart" in result.stderr and "2 added epochs" in result.stderr
    assert "warm restart" in result.stdout  # the summary names the schedule
    run = load_model(out)
    lrs = run.history["lr"]
    assert run.epoch == 5 and run.train_config.lr_cycle_start == 3
    assert lrs[:3] == pytest.approx([0.5 * 0.01 * (1 + math.cos(math.pi * e / 3))
                                     for e in range(3)])
    assert lrs[3:] == pytest.approx([0.01, 0.005])  # a new cosine over the 2 added epochs
    again = runner.invoke(app, [*base, "--epochs", "5", "--resume"])
    assert again.exit_code != 0 and "give --epochs above 5" in again.stderr


def test_resume_refuses_a_new_length_for_an_interrupted_run(mask, tmp_path, runner):
    out = tmp_path / "run.h5"

    class CtrlCAtEpoch3(SilentObserver):
        def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
            if epoch == 3:
                raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="2 finished epochs"):
        train_mask_file(mask, out, options=OPTIONS, train_overrides={**OVERRIDES, "epochs": 4},
                        device="cpu", observer=CtrlCAtEpoch3())  # Ctrl-C saves epoch 2
    result = runner.invoke(app, ["train", str(mask), "--out", str(out), "--resume",
                                 "--epochs", "6", *TINY])
    assert result.exit_code != 0
    assert "stopped at epoch 2 of a 4-epoch schedule" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_checkpoints_by_time_lose_at_most_one_period(mask, tmp_path, monkeypatch):
    """A fake clock: each epoch takes 10 s, checkpoints at least 25 s apart.

    Writes land at epochs 3, 6, 9 and the last (10): between two writes at most 25 s plus one
    epoch pass, so a kill at any moment loses at most that much training.
    """
    clock = [0.0]
    monkeypatch.setattr(train_module.time, "monotonic", lambda: clock[0])

    class TenSecondEpochs(SilentObserver):
        def epoch_finished(self, record: dict[str, float]) -> None:
            pass

        def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
            clock[0] += 10.0  # the epoch about to run takes 10 s

    written: list[tuple[int, float]] = []
    real_save = train_module.save_run

    def recording_save(run, path, completed):
        written.append((run.epoch, clock[0]))
        real_save(run, path, completed)

    monkeypatch.setattr(train_module, "save_run", recording_save)
    train_mask_file(mask, tmp_path / "run.h5", options=OPTIONS, device="cpu",
                    train_overrides={**OVERRIDES, "epochs": 10, "checkpoint_seconds": 25.0},
                    observer=TenSecondEpochs())
    assert [epoch for epoch, _ in written] == [3, 6, 9, 10]
    times = [0.0] + [t for _, t in written]
    assert max(np.diff(times)) <= 25.0 + 10.0
    assert load_model(tmp_path / "run.h5").epoch == 10


def test_ctrl_c_between_timed_checkpoints_saves_the_last_finished_epoch(mask, tmp_path):
    out = tmp_path / "run.h5"

    class CtrlCAtEpoch4(SilentObserver):
        def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
            if epoch == 4:
                raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="3 finished epochs"):
        train_mask_file(mask, out, options=OPTIONS, device="cpu", observer=CtrlCAtEpoch4(),
                        train_overrides={**OVERRIDES, "epochs": 6, "checkpoint_seconds": 1e9})
    assert load_model(out).epoch == 3  # no timed write happened; Ctrl-C wrote epoch 3


def test_a_per_epoch_csv_log_sits_beside_the_checkpoint(mask, tmp_path, runner):
    from susl_cli.training_log import read_history_csv

    out = tmp_path / "run.h5"
    base = ["train", str(mask), "--out", str(out), "--quiet", *TINY]
    assert runner.invoke(app, [*base, "--epochs", "3"]).exit_code == 0
    log = read_history_csv(tmp_path / "run.history.csv")
    assert list(log)[:2] == ["epoch", "loss"] and log["epoch"] == [1.0, 2.0, 3.0]
    history = load_model(out).history
    assert log["loss"] == pytest.approx(history["loss"])
    assert {"lr", "train_labelled_acc", "components_used", "seconds"} <= set(log)
    assert runner.invoke(app, [*base, "--epochs", "4", "--resume"]).exit_code == 0
    assert read_history_csv(tmp_path / "run.history.csv")["epoch"] == [1.0, 2.0, 3.0, 4.0]
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary, then renamed


def test_info_history_draws_the_curves_and_gives_them_as_json(mask, tmp_path, runner):
    import json

    out = tmp_path / "run.h5"
    assert runner.invoke(app, ["train", str(mask), "--out", str(out), "--quiet", "--epochs",
                               "4", *TINY]).exit_code == 0
    shown = runner.invoke(app, ["info", str(out), "--history"], env={"COLUMNS": "150"})
    assert shown.exit_code == 0, shown.output
    loss_row = next(line for line in shown.stdout.splitlines() if " loss " in line)
    assert any(ch in loss_row for ch in "▁▂▃▄▅▆▇█")  # a 4-character curve
    values = json.loads(runner.invoke(app, ["info", str(out), "--history", "--json"]).stdout)
    assert values["loss"] == pytest.approx(load_model(out).history["loss"])
    refused = runner.invoke(app, ["info", str(mask), "--history"])
    assert refused.exit_code != 0 and "needs a checkpoint" in refused.stderr
