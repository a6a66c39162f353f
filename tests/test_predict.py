"""Predictions in the library: reading inputs of every kind, layout checks, the class names
(labelled classes and discovered ones) and the entropy threshold (never from any label of a
hidden class)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from susl_cli.errors import DataError, UsageError
from susl_cli.evaluate import predict_probs
from susl_cli.metrics import entropy
from susl_cli.predict import (
    COLUMNS,
    PredictOptions,
    calibrate,
    fit_layout,
    predict_file,
    read_inputs,
)
from susl_cli.runs import load_model
from susl_cli.storage.masked import read_masked_dataset


@pytest.fixture(scope="module")
def image_x(tiny_image_run) -> np.ndarray:
    """The tiny image mask's test inputs, (40, 6, 6) in [0, 1]."""
    return read_masked_dataset(tiny_image_run[0]).x_test


def test_options_are_validated() -> None:
    with pytest.raises(UsageError, match="--split"):
        PredictOptions(split="val")
    with pytest.raises(UsageError, match="--entropy-quantile"):
        PredictOptions(entropy_quantile=0.0)


def test_user_files_need_no_labels(tmp_path: Path, image_x: np.ndarray) -> None:
    np.savez(tmp_path / "a.npz", x=image_x, x_test=image_x[:3])
    x, what = read_inputs(str(tmp_path / "a.npz"), PredictOptions())
    assert x.shape == (40, 6, 6) and "40 rows" in what
    x, _ = read_inputs(str(tmp_path / "a.npz"), PredictOptions(split="test"))
    assert len(x) == 3
    flat = image_x.reshape(40, -1)
    pd.DataFrame(flat).to_csv(tmp_path / "plain.csv", index=False)
    assert read_inputs(str(tmp_path / "plain.csv"), PredictOptions())[0].shape == (40, 36)
    pd.DataFrame(flat).assign(label=1).to_csv(tmp_path / "lab.csv", index=False)
    assert read_inputs(str(tmp_path / "lab.csv"), PredictOptions())[0].shape == (40, 36)
    with h5py.File(tmp_path / "u.h5", "w") as f:
        f["x"] = image_x
    assert read_inputs(str(tmp_path / "u.h5"), PredictOptions())[0].shape == (40, 6, 6)
    with pytest.raises(DataError, match="no test set"):
        read_inputs(str(tmp_path / "u.h5"), PredictOptions(split="test"))


def test_mask_files_give_their_test_set(tiny_image_run) -> None:
    x, what = read_inputs(str(tiny_image_run[0]), PredictOptions())
    assert len(x) == 40 and "test rows" in what
    x, _ = read_inputs(str(tiny_image_run[0]), PredictOptions(split="train"))
    assert len(x) == 200


def test_other_inputs_are_refused(tiny_image_run, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="checkpoint"):
        read_inputs(str(tiny_image_run[1]), PredictOptions())
    with pytest.raises(DataError, match="--data-dir"):
        read_inputs("mnist", PredictOptions(data_dir=tmp_path))
    with pytest.raises(UsageError, match="unknown dataset"):
        read_inputs("nonsense", PredictOptions())


def test_layout_is_checked(tiny_image_run, image_x: np.ndarray) -> None:
    run = load_model(tiny_image_run[1])
    assert fit_layout(run, image_x.reshape(40, 36), "x").shape == (40, 6, 6)
    with pytest.raises(DataError, match=r"\(6, 6\)"):
        fit_layout(run, np.zeros((3, 35), np.float32), "x")
    with pytest.raises(DataError, match="255"):
        fit_layout(run, image_x * 255, "x")


def test_threshold_is_a_quantile_of_labelled_training_entropies(tiny_image_run) -> None:
    run = load_model(tiny_image_run[1])
    masked = read_masked_dataset(tiny_image_run[0])
    labelled = masked.y_observed >= 0
    expected = np.quantile(entropy(predict_probs(run, masked.x_train[labelled])), 0.8)
    calibration = calibrate(run, tiny_image_run[1], None, 0.8)
    assert calibration.entropy_threshold == pytest.approx(expected)
    discovery = calibration.discovery
    assert discovery.component_class[:2] == (0, 1)  # labelled components keep their class
    assert discovery.class_names[:2] == tuple(run.meta.class_names[c]
                                              for c in run.meta.labelled_classes)
    assert "stored" in calibration.mapping_source


def test_moved_or_foreign_mask_files(tiny_image_run, tiny_real_run, tmp_path: Path) -> None:
    run = load_model(tiny_image_run[1])
    run.meta.mask_file = str(tmp_path / "gone.h5")
    calibration = calibrate(run, tiny_image_run[1], None, 0.95)
    assert calibration.entropy_threshold is None and "--mask" in calibration.threshold_source
    with pytest.raises(DataError, match="does not exist"):
        calibrate(run, tiny_image_run[1], tmp_path / "gone.h5", 0.95)
    with pytest.raises(DataError, match="not the mask file"):
        calibrate(run, tiny_image_run[1], tiny_real_run[0], 0.95)
    run.meta.discovery = None  # an older checkpoint: nothing stored, nothing to compute from
    with pytest.raises(DataError, match="no discovered classes stored"):
        calibrate(run, tiny_image_run[1], None, 0.95)


def test_predictions_table(tiny_real_run) -> None:
    predictions = predict_file(tiny_real_run[1], str(tiny_real_run[0]), PredictOptions())
    frame = predictions.frame()
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 40
    assert (frame.probability > 0).all() and (frame.probability <= 1).all()
    threshold = predictions.calibration.entropy_threshold
    assert (frame.unlike_labelled == (frame.entropy > threshold)).all()
    summary = predictions.to_dict()
    assert sum(summary["rows_per_class"].values()) == 40
    # the class is the one with the most q mass over its components; novelty is the mass on
    # new classes, so a row given a new class has novelty above any one labelled class's q
    discovery = predictions.calibration.discovery
    class_probs = discovery.class_probs(predictions.probs)
    assert np.allclose(class_probs.sum(-1), 1.0, atol=1e-5)
    assert (frame["class"] == np.asarray(discovery.class_names)[class_probs.argmax(-1)]).all()
    assert np.allclose(frame.novelty, class_probs[:, discovery.n_labelled:].sum(-1))
