"""A short run on a small real MNIST slice learns: labelled-class accuracy far above chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from susl_cli.cli import app
from susl_cli.data.sources import load_dataset
from susl_cli.runs import load_model


def test_short_gmdgm_run_on_mnist_slice_learns(data_dir: Path, tmp_path: Path, runner):
    mnist = load_dataset("mnist", data_dir=data_dir)
    rng = np.random.default_rng(0)
    train = rng.choice(len(mnist.y_train), 3000, replace=False)
    test = rng.choice(len(mnist.y_test), 1000, replace=False)
    np.savez(tmp_path / "slice.npz", x=mnist.x_train[train], y=mnist.y_train[train],
             x_test=mnist.x_test[test], y_test=mnist.y_test[test])
    mask, run = tmp_path / "mask.h5", tmp_path / "run.h5"
    assert runner.invoke(app, ["mask", "--dataset", str(tmp_path / "slice.npz"),
                               "--labelled-classes", "0-4", "--out", str(mask)]).exit_code == 0
    result = runner.invoke(app, ["train", str(mask), "--epochs", "6", "--extra-components", "10",
                                 "--quiet", "--device", "cpu", "--out", str(run)])
    assert result.exit_code == 0, result.output

    loaded = load_model(run)
    y_test = mnist.y_test[test]
    known = y_test < 5
    x = torch.from_numpy(loaded.transform.apply(mnist.x_test[test][known]))
    with torch.no_grad():
        component = loaded.model.classifier_logits(x).argmax(-1).numpy()
    # components 0..4 are tied to classes 0..4; anything else counts as wrong
    accuracy = float(np.mean(component == y_test[known]))
    print(f"labelled-class test accuracy after 6 epochs: {accuracy:.3f}")
    assert accuracy > 0.6, accuracy  # chance among 15 components is ~0.07
