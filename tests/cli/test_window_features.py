"""`--input-features window-stats` end to end: mask, train, evaluate, sample, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from susl_cli.cli import app
from susl_cli.runs import load_model
from susl_cli.window_features import feature_names, window_features
from tests.data_helpers import assert_one_line_error
from tests.data_helpers import invoke_ok as _ok


def _windows(tmp_path: Path) -> Path:
    """Four classes of 2-channel windows that differ in frequency and phase-shift at random:
    raw values barely separate them, their spectra do."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 60)
    t = np.arange(32)
    phase = rng.uniform(0, 2 * np.pi, (len(y), 2, 1))
    x = np.sin(2 * np.pi * (y[:, None, None] + 1) * t / 32 + phase)
    x = (x + rng.normal(0, 0.2, x.shape)).astype(np.float32)
    test = np.arange(len(y)) % 6 == 0
    path = tmp_path / "windows.npz"
    np.savez(path, x=x[~test], y=y[~test], x_test=x[test], y_test=y[test])
    return path


def test_window_stats_model_trains_scores_samples_and_predicts_raw_windows(runner, tmp_path):
    source = _windows(tmp_path)
    mask, run = tmp_path / "mask.h5", tmp_path / "run.h5"
    _ok(runner, ["mask", "-d", str(source), "-l", "0-1", "--out", str(mask)])
    _ok(runner, ["train", str(mask), "--input-features", "window-stats", "--epochs", "3",
                 "--batch-size", "20", "--labelled-batch-size", "10", "--extra-components", "4",
                 "--hidden-units", "16", "--latent-dim", "2", "--learning-rate", "0.01",
                 "--quiet", "--device", "cpu", "--out", str(run)])
    loaded = load_model(run)
    assert loaded.model_config.input_features == "window-stats"
    assert loaded.transform.input_shape == (2, 32)
    assert loaded.model_config.input_dim == loaded.transform.output_dim <= len(feature_names(2, 32))

    assert "window-stats" in _ok(runner, ["info", str(run)]).stdout

    scores = json.loads(_ok(runner, ["evaluate", str(run), "--json"]).stdout)
    confusion = scores["runs"][0]["metrics"]["confusion"]
    assert sum(map(sum, confusion)) == 40  # every test window scored

    samples = tmp_path / "s.csv"
    _ok(runner, ["sample", str(run), "--out", str(samples), "--rows", "2"])
    columns = list(pd.read_csv(samples).columns)
    assert columns[-len(feature_names(2, 32)):] == feature_names(2, 32)
    as_h5 = tmp_path / "s.h5"
    _ok(runner, ["sample", str(run), "--out", str(as_h5), "--rows", "2"])
    described = json.loads(_ok(runner, ["info", str(as_h5), "--json"]).stdout)
    assert described["value_names"] == feature_names(2, 32)

    # predict takes raw windows and summarises them exactly as training did
    with np.load(source) as archive:
        raw = archive["x_test"][:9]
    np.savez(tmp_path / "new.npz", x=raw)
    _ok(runner, ["predict", str(run), str(tmp_path / "new.npz"), "--out",
                 str(tmp_path / "p.csv")])
    t = loaded.transform
    by_hand = (window_features(raw)[:, t.kept] - t.offset) / t.scale
    with torch.no_grad():
        probs = torch.softmax(loaded.model.classifier_logits(torch.from_numpy(by_hand)), -1)
    predicted = pd.read_csv(tmp_path / "p.csv")
    np.testing.assert_array_equal(predicted["component"], probs.argmax(-1).numpy())
    np.testing.assert_allclose(predicted["probability"], probs.max(-1).values.numpy(), rtol=1e-4)


def test_window_stats_on_flat_vectors_is_one_line_error(runner, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "flat.npz", x=rng.normal(size=(40, 40)).astype(np.float32),
             y=np.repeat(np.arange(2), 20))
    mask, run = tmp_path / "mask.h5", tmp_path / "run.h5"
    _ok(runner, ["mask", "-d", str(tmp_path / "flat.npz"), "-l", "0", "--out", str(mask)])
    line = assert_one_line_error(
        runner.invoke(app, ["train", str(mask), "--input-features", "window-stats", "--epochs",
                            "1", "--quiet", "--out", str(run)]), absent=run)
    assert "--input-features raw" in line


def _train_quick(runner, mask: Path, run: Path, *extra: str) -> None:
    _ok(runner, ["train", str(mask), *extra, "--epochs", "1", "--batch-size", "20",
                 "--hidden-units", "8", "--latent-dim", "2", "--quiet", "--device", "cpu",
                 "--out", str(run)])


def test_mask_time_choice_is_stored_used_by_train_and_overridable(runner, tmp_path):
    source = _windows(tmp_path)
    mask = tmp_path / "mask.h5"
    _ok(runner, ["mask", "-d", str(source), "-l", "0-1", "--input-features", "window-stats",
                 "--out", str(mask)])
    described = json.loads(_ok(runner, ["info", str(mask), "--json"]).stdout)
    assert described["input_features"] == "window-stats"
    assert "window-stats" in _ok(runner, ["info", str(mask)]).stdout

    _train_quick(runner, mask, tmp_path / "chosen.h5")
    chosen = load_model(tmp_path / "chosen.h5")
    assert chosen.model_config.input_features == "window-stats"
    assert chosen.model_config.input_dim <= len(feature_names(2, 32))

    _train_quick(runner, mask, tmp_path / "raw.h5", "--input-features", "raw")
    raw = load_model(tmp_path / "raw.h5")
    assert raw.model_config.input_features == "raw"
    assert raw.model_config.input_dim == 2 * 32


def test_mask_without_a_choice_trains_raw(runner, tmp_path):
    mask = tmp_path / "mask.h5"
    _ok(runner, ["mask", "-d", str(_windows(tmp_path)), "-l", "0-1", "--out", str(mask)])
    assert json.loads(_ok(runner, ["info", str(mask), "--json"]).stdout)["input_features"] is None
    _train_quick(runner, mask, tmp_path / "run.h5")
    assert load_model(tmp_path / "run.h5").model_config.input_features == "raw"


def test_mask_refuses_window_stats_it_cannot_apply(runner, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "images.npz", x=rng.random((40, 32, 32)).astype(np.float32),
             y=np.repeat(np.arange(2), 20))
    np.savez(tmp_path / "flat.npz", x=rng.normal(size=(40, 40)).astype(np.float32),
             y=np.repeat(np.arange(2), 20))
    out = tmp_path / "mask.h5"
    for source, expected in (("images.npz", "not images"), ("flat.npz", "--input-features raw")):
        result = runner.invoke(app, ["mask", "-d", str(tmp_path / source), "-l", "0",
                                     "--input-features", "window-stats", "--out", str(out)])
        assert expected in assert_one_line_error(result, absent=out)
    result = runner.invoke(app, ["mask", "-d", str(tmp_path / "flat.npz"), "-l", "0",
                                 "--input-features", "wavelets", "--out", str(out)])
    assert "unknown input features" in assert_one_line_error(result, absent=out)
