"""`susl train` through the CLI runner on a tiny synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from susl_cli.cli import app
from susl_cli.runs import ModelOptions, load_model
from susl_cli.train import SilentObserver, TrainingInterrupted, train_mask_file


@pytest.fixture
def tiny_mask(tmp_path: Path, runner) -> Path:
    rng = np.random.default_rng(0)
    centres = rng.uniform(0.1, 0.9, size=(4, 30))
    y = np.repeat(np.arange(4), 50)
    x = np.clip(centres[y] + rng.normal(0, 0.05, (200, 30)), 0, 1).astype(np.float32)
    np.savez(tmp_path / "tiny.npz", x=x, y=y, x_test=x[:40], y_test=y[:40])
    out = tmp_path / "tiny-mask.h5"
    result = runner.invoke(app, ["mask", "--dataset", str(tmp_path / "tiny.npz"),
                                 "--labelled-classes", "0-1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_checkpoint_and_resumes_identically(tiny_mask: Path, tmp_path: Path, runner):
    full = tmp_path / "full.h5"
    args = ["train", str(tiny_mask), "--epochs", "4", "--batch-size", "20",
            "--labelled-batch-size", "10", "--extra-components", "4", "--quiet", "--device", "cpu"]
    assert runner.invoke(app, [*args, "--out", str(full)]).exit_code == 0
    part = tmp_path / "part.h5"

    class CtrlCAtEpoch3(SilentObserver):
        def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
            if epoch == 3:
                raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="2 finished epochs"):
        train_mask_file(tiny_mask, part, options=ModelOptions(extra_components=4),
                        train_overrides={"epochs": 4, "batch_size": 20, "labelled_batch_size": 10},
                        device="cpu", observer=CtrlCAtEpoch3())
    assert load_model(part).epoch == 2
    result = runner.invoke(app, [*args, "--out", str(part), "--resume"])
    assert result.exit_code == 0, result.output
    a, b = load_model(full), load_model(part)
    assert a.epoch == b.epoch == 4
    for key, value in a.model.state_dict().items():
        assert np.array_equal(value.numpy(), b.model.state_dict()[key].numpy()), key
    assert len(a.history["loss"]) == 4


def test_train_refuses_checkpoint_as_mask_and_existing_output(tiny_mask, tmp_path, runner):
    out = tmp_path / "run.h5"
    first = runner.invoke(app, ["train", str(tiny_mask), "--epochs", "1", "--quiet",
                                "--extra-components", "2", "--out", str(out)])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["train", str(tiny_mask), "--epochs", "1", "--out", str(out)])
    assert again.exit_code != 0 and "--overwrite" in again.stderr
    wrong = runner.invoke(app, ["train", str(out), "--out", str(tmp_path / "x.h5")])
    assert wrong.exit_code != 0 and "checkpoint" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    bad = runner.invoke(app, ["train", str(tiny_mask), "--latent-dim", "0",
                              "--out", str(tmp_path / "y.h5")])
    assert bad.exit_code != 0 and "latent-dim" in bad.stderr
    assert not (tmp_path / "y.h5").exists()


def test_info_describes_checkpoint(tiny_mask: Path, tmp_path: Path, runner):
    out = tmp_path / "run.h5"
    assert runner.invoke(app, ["train", str(tiny_mask), "--epochs", "1", "--quiet",
                               "--extra-components", "2", "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["info", str(out), "--json"])
    assert result.exit_code == 0, result.output
    import json

    info = json.loads(result.stdout)
    assert info["kind"] == "checkpoint" and info["epoch"] == 1 and info["completed"] is True
    assert info["model_config"]["n_components"] == 4
