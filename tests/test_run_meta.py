"""Typed run metadata: stored under the checkpoint's keys as before, older files still load,
and the one rule tying the first components to the labelled classes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from susl_cli.errors import FileFormatError
from susl_cli.run_meta import RunMeta, component_classes, component_of_class
from susl_cli.runs import load_model, save_run
from susl_cli.storage.h5 import reseal_file

# The keys `susl train` has written into a checkpoint's meta since the first release, plus
# those added since (label_source; discovery, share_multipliers, auto_choice once set).
STORED_KEYS = {"model", "mask_sha256", "mask_file", "dataset", "regime", "label_source",
               "class_names", "n_classes", "labelled_classes", "hidden_classes", "input_kind",
               "seed", "susl_version", "completed", "epoch", "model_config", "train_config"}


def _edit_meta(path: Path, change) -> None:
    with h5py.File(path, "r+") as f:
        meta = json.loads(f.attrs["meta"])
        change(meta)
        f.attrs["meta"] = json.dumps(meta)
    reseal_file(path)


def test_round_trip_keeps_every_key_and_unknown_ones():
    stored = {"mask_file": "/d/m.h5", "mask_sha256": "ab" * 32, "class_names": ["a", "b", "c"],
              "labelled_classes": [2, 0], "seed": 7, "model": "m2", "dataset": "mnist",
              "regime": "SUS", "label_source": "as-given", "n_classes": 3,
              "hidden_classes": [1], "input_kind": "image", "susl_version": "0.1.0",
              "completed": True, "discovery": {"method": "overlap"},
              "share_multipliers": [0.0, 0.5], "auto_choice": ["kl_weight: 1"],
              "from_a_newer_susl": {"x": 1}}
    meta = RunMeta.from_dict({**stored, "epoch": 3, "model_config": {}, "train_config": {}})
    assert meta.labelled_classes == [2, 0] and meta.seed == 7 and meta.completed is True
    assert meta.unknown == {"from_a_newer_susl": {"x": 1}}
    assert meta.to_dict() == stored
    assert meta.labelled_names() == ["c", "a"] and meta.n_labelled == 2


def test_an_old_checkpoint_without_newer_keys_loads_with_defaults(tiny_image_run, tmp_path):
    old = tmp_path / "old.h5"
    shutil.copy(tiny_image_run[1], old)

    def as_written_by_the_first_release(meta: dict) -> None:
        for key in ("label_source", "discovery", "share_multipliers", "auto_choice",
                    "completed"):
            meta.pop(key, None)

    _edit_meta(old, as_written_by_the_first_release)
    run = load_model(old)
    assert run.meta.label_source == "masked" and run.meta.discovery is None
    assert run.meta.completed is False and run.meta.share_multipliers is None
    assert run.meta.class_names == ["0", "1", "2", "3"] and run.meta.labelled_classes == [0, 1]


def test_a_checkpoint_keeps_its_keys_when_saved_again(tiny_image_run, tmp_path):
    copy = tmp_path / "again.h5"
    shutil.copy(tiny_image_run[1], copy)
    with h5py.File(tiny_image_run[1], "r") as f:
        before = json.loads(f.attrs["meta"])
    assert STORED_KEYS <= set(before)
    run = load_model(copy, with_optimizer=True)
    save_run(run, copy, completed=bool(before["completed"]))
    with h5py.File(copy, "r") as f:
        after = json.loads(f.attrs["meta"])
    assert after == before  # same keys, same values: the file format did not change


@pytest.mark.parametrize("change", [lambda m: m.pop("mask_sha256"),
                                    lambda m: m.update(labelled_classes="zero"),
                                    lambda m: m.update(mask_file=3)])
def test_missing_or_garbled_metadata_is_one_sentence(tiny_image_run, tmp_path, change):
    bad = tmp_path / "bad.h5"
    shutil.copy(tiny_image_run[1], bad)
    _edit_meta(bad, change)
    with pytest.raises(FileFormatError, match="not a complete susl checkpoint"):
        load_model(bad)


def test_the_labelled_component_rule():
    np.testing.assert_array_equal(component_classes([3, 1], 5), [3, 1, -1, -1, -1])
    np.testing.assert_array_equal(component_classes([], 2), [-1, -1])
    assert component_of_class([3, 1]) == {3: 0, 1: 1}
    with pytest.raises(ValueError, match="components"):
        component_classes([0, 1, 2], 2)


def test_training_ties_labelled_points_to_their_components_by_the_rule(tiny_image_run):
    """The trained classifier puts each labelled class mostly in the component the rule
    assigns it (what evaluate, predict and sample then read back)."""
    from susl_cli.inference import predict_probs
    from susl_cli.storage.masked import read_masked_dataset

    mask, checkpoint = tiny_image_run
    run = load_model(checkpoint)
    masked = read_masked_dataset(mask)
    labelled = masked.y_observed >= 0
    predicted = predict_probs(run, masked.x_train[labelled]).argmax(-1)
    classes = run.meta.component_classes(run.model_config.n_components)
    assert np.mean(classes[predicted] == masked.y_observed[labelled]) > 0.5
