"""Library tests of susl_cli/evaluate.py on the tiny trained fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from susl_cli.errors import DataError, FileFormatError, UsageError
from susl_cli.evaluate import embed_points, evaluate_checkpoint, predict_probs
from susl_cli.runs import load_model
from susl_cli.storage.masked import read_masked_dataset


def test_scores_the_masks_test_set_with_probabilities(tiny_image_run):
    mask, run = tiny_image_run
    result = evaluate_checkpoint(run, device="cpu")
    masked = read_masked_dataset(mask)
    assert result.metrics.n_points == len(masked.y_test) == len(result.probs)
    assert np.allclose(result.probs.sum(1), 1.0, atol=1e-5)
    assert result.metrics.mapping_fit == "test"
    assert 0.0 <= result.metrics.cluster_acc_majority <= 1.0
    # The tiny classes are well separated: the labelled ones are learnt in the fixture's
    # epochs (label evidence, on by default, calls 4 of class 1's 40 unlabelled rows new on
    # this 200-row set: a ratio of few neighbour counts)
    assert result.metrics.known_acc_classifier >= 0.85


def test_mapping_fitted_on_training_labels_is_named(tiny_image_run):
    _, run = tiny_image_run
    result = evaluate_checkpoint(run, fit_mapping="train", device="cpu")
    assert result.metrics.mapping_fit == "train"
    # Scored points are the same; only the mapping's origin differs.
    assert np.array_equal(result.probs, evaluate_checkpoint(run, device="cpu").probs)


def test_saved_model_predicts_identically_after_reload(tiny_image_run):
    mask, run = tiny_image_run
    x = read_masked_dataset(mask).x_test
    first, second = load_model(run), load_model(run)
    assert np.array_equal(predict_probs(first, x), predict_probs(second, x))
    assert embed_points(first, x).shape == (len(x), first.model_config.latent_dim)


def test_rejects_unknown_mapping_protocol(tiny_image_run):
    with pytest.raises(UsageError, match="--fit-mapping"):
        evaluate_checkpoint(tiny_image_run[1], fit_mapping="both")


def test_rejects_data_of_another_layout(tiny_image_run, tiny_real_run):
    with pytest.raises(DataError, match="shape"):
        evaluate_checkpoint(tiny_image_run[1], data=tiny_real_run[0])


def test_missing_training_mask_says_to_pass_data(tiny_image_run, tmp_path: Path):
    mask, run = tiny_image_run
    moved_mask = tmp_path / "elsewhere.h5"
    shutil.copy(mask, moved_mask)
    # A checkpoint whose mask file has gone: copy the checkpoint and the mask apart.
    lonely = tmp_path / "run.h5"
    shutil.copy(run, lonely)
    result = evaluate_checkpoint(lonely, data=moved_mask)  # explicit --data works
    assert result.data_file == str(moved_mask)
    from susl_cli.evaluate import resolve_data_file

    fake = load_model(lonely)
    fake.meta.mask_file = str(tmp_path / "gone.h5")
    with pytest.raises(FileFormatError, match="--data"):
        resolve_data_file(fake, lonely, None)
