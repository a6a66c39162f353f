"""`susl train` through the CLI runner on a tiny synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from susl_cli.cli import app
from susl_cli.config import TrainConfig
from susl_cli.runs import ModelOptions, load_model, new_run
from susl_cli.train import SilentObserver, TrainingInterrupted, train_mask_file
from tests.data_helpers import assert_one_line_error


def test_train_writes_checkpoint_and_resumes_identically(blob_mask: Path, tmp_path: Path, runner):
    full = tmp_path / "full.h5"
    args = ["train", str(blob_mask), "--epochs", "4", "--batch-size", "20",
            "--labelled-batch-size", "10", "--extra-components", "4", "--quiet", "--device", "cpu"]
    assert runner.invoke(app, [*args, "--out", str(full)]).exit_code == 0
    part = tmp_path / "part.h5"

    class CtrlCAtEpoch3(SilentObserver):
        def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
            if epoch == 3:
                raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="2 finished epochs"):
        train_mask_file(blob_mask, part, options=ModelOptions(extra_components=4),
                        train_overrides={"epochs": 4, "batch_size": 20, "labelled_batch_size": 10},
                        device="cpu", observer=CtrlCAtEpoch3())
    assert load_model(part).epoch == 2
    result = runner.invoke(app, [*args, "--out", str(part), "--resume"])
    assert result.exit_code == 0, result.output
    a, b = load_model(full), load_model(part)
    assert a.epoch == b.epoch == 4
    assert b.meta.completed  # loaded as interrupted, saved as finished once it finished
    for key, value in a.model.state_dict().items():
        assert np.array_equal(value.numpy(), b.model.state_dict()[key].numpy()), key
    assert len(a.history["loss"]) == 4


def test_train_refuses_checkpoint_as_mask_and_existing_output(blob_mask, tmp_path, runner):
    out = tmp_path / "run.h5"
    first = runner.invoke(app, ["train", str(blob_mask), "--epochs", "1", "--quiet",
                                "--extra-components", "2", "--out", str(out)])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["train", str(blob_mask), "--epochs", "1", "--out", str(out)])
    assert again.exit_code != 0 and "--overwrite" in again.stderr
    wrong = runner.invoke(app, ["train", str(out), "--out", str(tmp_path / "x.h5")])
    assert wrong.exit_code != 0 and "checkpoint" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    bad = runner.invoke(app, ["train", str(blob_mask), "--latent-dim", "0",
                              "--out", str(tmp_path / "y.h5")])
    assert bad.exit_code != 0 and "latent-dim" in bad.stderr
    assert not (tmp_path / "y.h5").exists()


def test_info_describes_checkpoint(blob_mask: Path, tmp_path: Path, runner):
    out = tmp_path / "run.h5"
    assert runner.invoke(app, ["train", str(blob_mask), "--epochs", "1", "--quiet",
                               "--extra-components", "2", "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["info", str(out), "--json"])
    assert result.exit_code == 0, result.output
    import json

    info = json.loads(result.stdout)
    assert info["kind"] == "checkpoint" and info["epoch"] == 1 and info["completed"] is True
    assert info["model_config"]["n_components"] == 4



def test_cuda_without_a_gpu_is_a_clear_error(blob_mask, tmp_path, runner, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run.h5"
    line = assert_one_line_error(runner.invoke(app, ["train", str(blob_mask), "--device", "cuda",
                                               "--epochs", "1", "--out", str(out)]))
    assert "--device cpu" in line
    assert not out.exists()


def test_resume_refuses_another_mask_or_model(blob_mask, tmp_path, runner, tiny_image_run):
    out = tmp_path / "run.h5"
    args = ["--epochs", "1", "--extra-components", "2", "--quiet", "--device", "cpu"]
    assert runner.invoke(app, ["train", str(blob_mask), *args, "--out", str(out)]).exit_code == 0
    before = out.read_bytes()
    other_mask = tiny_image_run[0]
    line = assert_one_line_error(runner.invoke(app, ["train", str(other_mask), "--epochs", "2",
                                               "--resume", "--out", str(out)]))
    assert "another mask" in line
    line = assert_one_line_error(runner.invoke(app, ["train", str(blob_mask), "--epochs", "2",
                                               "--model", "m2", "--resume", "--out", str(out)]))
    assert "gmdgm" in line
    line = assert_one_line_error(runner.invoke(app, ["train", str(blob_mask), "--epochs", "2",
                                               "--alpha", "3", "--resume", "--out", str(out)]))
    assert "alpha" in line
    assert out.read_bytes() == before  # nothing clobbered by the refusals


def test_resume_without_a_checkpoint(blob_mask, tmp_path, runner):
    line = assert_one_line_error(runner.invoke(app, ["train", str(blob_mask), "--resume", "--out",
                                               str(tmp_path / "none.h5")]))
    assert "none.h5" in line


@pytest.mark.parametrize(("option", "value", "needle"), [
    ("--hidden-units", "0", "--hidden-units"),
    ("--latent-dim", "-3", "--latent-dim"),
    ("--batch-size", "0", "--batch-size"),
    ("--epochs", "0", "--epochs"),
    ("--learning-rate", "-1", "--learning-rate"),
    ("--alpha", "-1", "--alpha"),
    ("--extra-components", "-1", "--extra-components"),
    ("--y-estimator", "sometimes", "y-estimator"),
    ("--model", "m3", "m3"),
])
def test_impossible_hyper_parameters(blob_mask, tmp_path, runner, option, value, needle):
    out = tmp_path / "run.h5"
    line = assert_one_line_error(runner.invoke(app, ["train", str(blob_mask), "--epochs", "1",
                                               option, value, "--out", str(out)]))
    assert needle in line
    assert not out.exists()


def test_semi_supervised_model_on_a_sus_mask_is_accidental_sus(blob_mask, tmp_path, runner):
    """--extra-components 0 on a SUS mask: K = the labelled classes only (paper Table 1)."""
    out = tmp_path / "accidental.h5"
    result = runner.invoke(app, ["train", str(blob_mask), "--epochs", "1", "--quiet",
                                 "--extra-components", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_model(out).model_config.n_components == 2


def test_corrupt_mask_file(tmp_path, runner):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    line = assert_one_line_error(runner.invoke(app, ["train", str(bad), "--out",
                                               str(tmp_path / "r.h5")]))
    assert "bad.h5" in line


def test_components_used_and_labelled_share_are_logged_as_q_y_x_predicts(blob_mask, tmp_path,
                                                                          runner):
    from susl_cli.evaluate import predict_probs
    from susl_cli.storage.masked import read_masked_dataset

    out = tmp_path / "run.h5"
    result = runner.invoke(app, ["train", str(blob_mask), "--epochs", "2", "--batch-size", "20",
                                 "--labelled-batch-size", "10", "--extra-components", "4",
                                 "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    run = load_model(out)
    masked = read_masked_dataset(blob_mask)
    predicted = predict_probs(run, masked.x_train).argmax(-1)

    used = len(np.unique(predicted[masked.y_observed < 0]))  # on the unlabelled points
    assert len(run.history["components_used"]) == 2
    assert run.history["components_used"][-1] == used
    assert f"{used} of 6" in result.stdout  # the summary table says it too

    n_labelled = run.model_config.n_labelled  # on all training points, against p(y)
    share = np.bincount(predicted, minlength=run.model_config.n_components) / len(predicted)
    ratio = np.max(share[:n_labelled] / np.asarray(run.model_config.prior[:n_labelled]))
    assert len(run.history["labelled_share_ratio"]) == 2
    assert run.history["labelled_share_ratio"][-1] == pytest.approx(ratio)
    assert f"{ratio:.2f}x its prior share" in result.stdout


def test_labelled_share_ratio_flags_a_labelled_component_that_takes_everything(blob_mask):
    from susl_cli.cli.train_summary import LABELLED_SHARE_WARNING, _labelled_share_text
    from susl_cli.diagnostics import assignment_counts, largest_labelled_share_ratio
    from susl_cli.storage.masked import read_masked_dataset
    from susl_cli.train import prepare_data

    masked = read_masked_dataset(blob_mask)
    run = new_run(masked, blob_mask, ModelOptions(extra_components=4), TrainConfig(),
                  torch.device("cpu"))
    data = prepare_data(run, masked.x_train, masked.y_observed, torch.device("cpu"))
    k = run.model_config.n_components
    # every point into labelled component 0: its share is 1, so the ratio is 1 / p(y=0)
    run.model.classifier_logits = lambda x: torch.eye(k)[torch.zeros(len(x), dtype=torch.long)]
    ratio = largest_labelled_share_ratio(*assignment_counts(run.model, data.x_labelled,
                                                           data.x_unlabelled),
                                         run.model_config.prior,
                                         run.model_config.n_labelled)
    assert ratio == pytest.approx(1 / run.model_config.prior[0])
    assert ratio > LABELLED_SHARE_WARNING and "--marginal-kl 1" in _labelled_share_text(ratio)
    assert "--marginal-kl" not in _labelled_share_text(1.05)
    # a run already trained with the term is not told to add it
    hint = _labelled_share_text(ratio, marginal_kl=1.0)
    assert "try --marginal-kl 1" not in hint and "already trained with --marginal-kl 1" in hint
    # nor told to switch on a merge guard that was on
    assert "--labelled-share-cap 1.15" in hint
    guarded = _labelled_share_text(ratio, marginal_kl=1.0, cap=1.15)
    assert "--labelled-share-cap" not in guarded and "merge guard (cap 1.15)" in guarded
    # label evidence: suggested when off, reported as not enough when on
    assert "try label evidence (--label-evidence 10)" in hint
    evidenced = _labelled_share_text(ratio, marginal_kl=1.0, evidence=10.0)
    assert "--label-evidence" not in evidenced and "label evidence (weight 10)" in evidenced


def test_idle_components_hint_respects_the_runs_own_marginal_kl():
    from susl_cli.cli.train_summary import _components_used_text

    assert "try --marginal-kl 1" in _components_used_text(2, 45)
    assert "try --marginal-kl 1" not in _components_used_text(2, 45, marginal_kl=1.0)
    assert "--marginal-kl" not in _components_used_text(40, 45, marginal_kl=1.0)


def test_resuming_a_checkpoint_without_a_newer_history_key_pads_it(blob_mask, tmp_path):
    from susl_cli.runs import save_run

    out = tmp_path / "run.h5"
    options = ModelOptions(extra_components=4)
    overrides = {"batch_size": 20, "labelled_batch_size": 10}
    train_mask_file(blob_mask, out, options=options, train_overrides={**overrides, "epochs": 1},
                    device="cpu", observer=SilentObserver())
    old = load_model(out, with_optimizer=True)
    del old.history["components_used"]  # as written before susl logged it
    save_run(old, out, completed=True)
    resumed = train_mask_file(blob_mask, out, options=options, resume=True, device="cpu",
                              train_overrides={**overrides, "epochs": 2},
                              observer=SilentObserver())
    used = resumed.history["components_used"]
    assert len(used) == len(resumed.history["loss"]) == 2
    assert np.isnan(used[0]) and used[1] >= 1


def test_help_shows_the_config_dataclass_defaults(runner):
    from susl_cli.config import NetworkSettings, ObjectiveConfig, TrainConfig

    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    lines = {line.split()[1].split(",")[0]: line for line in result.stdout.splitlines()
             if line.startswith("│") and len(line.split()) > 1 and line.split()[1][:2] == "--"}
    for option, config, field in (("--alpha", ObjectiveConfig, "alpha"),
                                  ("--epochs", TrainConfig, "epochs"),
                                  ("--learning-rate", TrainConfig, "learning_rate"),
                                  ("--marginal-kl", ObjectiveConfig, "marginal_kl"),
                                  ("--latent-dim", NetworkSettings, "latent_dim")):
        default = config.__dataclass_fields__[field].default
        assert f"[default: {default}]" in lines[option], lines[option]
    # chosen by data size (susl_cli/sizing.py); the paper's value under --preset paper
    words = " ".join(w for w in result.stdout.split() if w != "│")  # across wrapped lines
    assert ("--y-estimator <str> enumerate (exact sum over components), gumbel (one sample) or "
            "topk") in words
    assert ("[default: topk from 10,000 unlabelled rows, else enumerate; --preset paper: "
            "enumerate]") in words
    # no fixed default: the mask file's choice, else raw (tests/cli/test_window_features.py)
    assert "[default: the mask" in lines["--input-features"]
