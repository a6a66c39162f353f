"""Same command, same seed, same result.

- `susl mask` twice: identical arrays and metadata (all but the creation time);
- `susl train` twice on the CPU: identical weights, optimizer state and history (all but the
  wall-clock columns `seconds` and `samples_per_s`);
- `susl evaluate --json` twice on one checkpoint, and on the two identical trainings:
  identical output (up to the checkpoint's own path);
- a different seed does change the result (so the checks above are not vacuous).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from susl_cli.runs import _flatten_optimizer, load_model
from susl_cli.storage.masked import read_masked_dataset

from .reliability_helpers import WALL_CLOCK_COLUMNS, invoke, write_tiny_npz

TRAIN = ["--epochs", 2, "--hidden-units", 16, "--latent-dim", 2, "--extra-components", 2,
         "--batch-size", 16, "--labelled-batch-size", 8, "--quiet", "--device", "cpu"]


def mask(data: Path, out: Path, seed: int) -> Path:
    result = invoke(["mask", "-d", data, "-l", "0-1", "--label-fraction", "0.3", "--seed", seed,
                     "--out", out, "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def train(mask_file: Path, out: Path, seed: int) -> Path:
    result = invoke(["train", mask_file, "--out", out, "--seed", seed, *TRAIN])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("determinism")
    write_tiny_npz(root / "data.npz")
    return root


def test_mask_is_deterministic(folder: Path, figures):
    a = read_masked_dataset(mask(folder / "data.npz", folder / "a.h5", 11), with_true_labels=True)
    b = read_masked_dataset(mask(folder / "data.npz", folder / "b.h5", 11), with_true_labels=True)
    c = read_masked_dataset(mask(folder / "data.npz", folder / "c.h5", 12), with_true_labels=True)
    for name in ("x_train", "y_observed", "x_test", "y_test", "y_train_true"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.metadata.to_json() | {"created_utc": ""} == b.metadata.to_json() | {"created_utc": ""}
    assert not np.array_equal(a.y_observed, c.y_observed)  # the seed matters
    figures.add("determinism_checks")


def test_cpu_training_and_evaluation_are_deterministic(folder: Path, figures):
    mask_file = mask(folder / "data.npz", folder / "train-mask.h5", 3)
    first, second = train(mask_file, folder / "r1.h5", 5), train(mask_file, folder / "r2.h5", 5)
    other = train(mask_file, folder / "r3.h5", 6)
    a, b = load_model(first, with_optimizer=True), load_model(second, with_optimizer=True)
    for key, value in a.model.state_dict().items():
        assert np.array_equal(value.numpy(), b.model.state_dict()[key].numpy()), key
    flat_a, flat_b = _flatten_optimizer(a.optimizer), _flatten_optimizer(b.optimizer)
    assert all(np.array_equal(flat_a[k], flat_b[k]) for k in flat_a)
    assert set(a.history) == set(b.history) and len(a.history["loss"]) == 2
    for column in set(a.history) - WALL_CLOCK_COLUMNS:
        assert a.history[column] == b.history[column], column
    c = load_model(other)
    assert not np.array_equal(a.model.state_dict()[next(iter(a.model.state_dict()))].numpy(),
                              c.model.state_dict()[next(iter(c.model.state_dict()))].numpy())
    figures.add("determinism_checks")

    outputs = [invoke(["evaluate", run, "--json", "--device", "cpu"]) for run in
               (first, first, second)]
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    assert outputs[0].stdout == outputs[1].stdout  # byte for byte
    same_run = [json.loads(r.stdout)["runs"][0] for r in outputs]
    assert same_run[0] | {"checkpoint": ""} == same_run[2] | {"checkpoint": ""}
    figures.add("determinism_checks", 2)
