"""Masked-dataset files: round trip, evaluation-only labels, atomicity, overwrite, checks."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from susl_cli.data.masking import make_masked_dataset
from susl_cli.data.sources import Dataset
from susl_cli.errors import DataError, FileFormatError, OutputError
from susl_cli.storage import masked as masked_storage
from susl_cli.storage.h5 import KIND_CHECKPOINT, atomic_h5_write, peek_kind, reseal_file
from susl_cli.storage.masked import (
    MaskedDataset,
    describe_masked_dataset,
    read_masked_dataset,
    read_user_h5,
    write_masked_dataset,
)


def _toy(seed: int = 0, with_test: bool = True) -> MaskedDataset:
    rng = np.random.default_rng(0)
    y = np.arange(90, dtype=np.int64) % 3
    x = rng.random((90, 2, 5)).astype(np.float32)
    data = Dataset("toy", x, y, x[:7] if with_test else None, y[:7] if with_test else None,
                   ("a", "b", "c"), "image", "0" * 64)
    return make_masked_dataset(data, (0, 2), label_fraction=0.2, seed=seed)


def test_round_trip(tmp_path: Path) -> None:
    original = _toy()
    path = write_masked_dataset(tmp_path / "m.h5", original)
    loaded = read_masked_dataset(path)
    np.testing.assert_array_equal(loaded.x_train, original.x_train)
    np.testing.assert_array_equal(loaded.y_observed, original.y_observed)
    np.testing.assert_array_equal(loaded.x_test, original.x_test)
    np.testing.assert_array_equal(loaded.y_test, original.y_test)
    assert loaded.x_train.dtype == np.float32 and loaded.y_observed.dtype == np.int64
    assert loaded.metadata == original.metadata
    assert loaded.class_names == ("a", "b", "c") and loaded.input_kind == "image"
    assert loaded.labelled_classes == (0, 2) and loaded.hidden_classes == (1,)
    assert loaded.regime == "SUS" and loaded.n_classes == 3
    assert peek_kind(path) == "masked-dataset"


def test_true_labels_only_on_request_and_documented(tmp_path: Path) -> None:
    original = _toy()
    path = write_masked_dataset(tmp_path / "m.h5", original)
    assert read_masked_dataset(path).y_train_true is None
    np.testing.assert_array_equal(
        read_masked_dataset(path, with_true_labels=True).y_train_true, original.y_train_true
    )
    with h5py.File(path, "r") as f:
        assert "never reads" in f["evaluation_only"].attrs["note"]
        assert set(f["train"].keys()) == {"x", "y_observed"}


def test_without_test_set(tmp_path: Path) -> None:
    path = write_masked_dataset(tmp_path / "m.h5", _toy(with_test=False))
    loaded = read_masked_dataset(path)
    assert loaded.x_test is None and loaded.y_test is None
    assert describe_masked_dataset(path)["n_test"] is None


def test_identical_arguments_give_byte_identical_arrays(tmp_path: Path) -> None:
    a = write_masked_dataset(tmp_path / "a.h5", _toy(seed=5))
    b = write_masked_dataset(tmp_path / "b.h5", _toy(seed=5))
    c = write_masked_dataset(tmp_path / "c.h5", _toy(seed=6))
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb, h5py.File(c, "r") as fc:
        for name in ("train/x", "train/y_observed", "test/x", "evaluation_only/y_train_true"):
            assert fa[name][()].tobytes() == fb[name][()].tobytes()
        assert fa["train/y_observed"][()].tobytes() != fc["train/y_observed"][()].tobytes()


def test_arrays_are_compressed_and_chunked(tmp_path: Path) -> None:
    path = write_masked_dataset(tmp_path / "m.h5", _toy())
    with h5py.File(path, "r") as f:
        assert f["train/x"].compression == "gzip" and f["train/x"].chunks is not None


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = write_masked_dataset(tmp_path / "m.h5", _toy(seed=1))
    before = path.read_bytes()
    with pytest.raises(OutputError, match="already exists.*--overwrite"):
        write_masked_dataset(path, _toy(seed=2))
    assert path.read_bytes() == before
    write_masked_dataset(path, _toy(seed=2), overwrite=True)
    assert read_masked_dataset(path).metadata.seed == 2


def test_failure_mid_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_write_array(group, name, array, **options):
        calls.append(name)
        if len(calls) == 2:
            raise RuntimeError("simulated crash while writing")
        group.create_dataset(name, data=array)

    monkeypatch.setattr(masked_storage, "write_array", failing_write_array)
    with pytest.raises(RuntimeError, match="simulated"):
        write_masked_dataset(tmp_path / "m.h5", _toy())
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary


def test_describe_does_not_load_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_masked_dataset(tmp_path / "m.h5", _toy())

    def no_reading(*args, **kwargs):
        raise AssertionError("describe must not read arrays")

    monkeypatch.setattr(masked_storage, "read_array", no_reading)
    summary = describe_masked_dataset(path)
    assert summary["n_train"] == 90 and summary["n_test"] == 7 and summary["input_shape"] == [2, 5]
    assert summary["n_labelled"] == 12 and summary["n_unlabelled"] == 78  # round(0.2 * 30) * 2
    assert summary["labelled_counts"] == [6, 0, 6] and summary["regime"] == "SUS"
    assert summary["dataset"] == "toy" and summary["seed"] == 0 and len(summary["sha256"]) == 64


def test_reading_the_wrong_kind(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    with atomic_h5_write(path, KIND_CHECKPOINT, overwrite=False):
        pass
    with pytest.raises(FileFormatError, match="is a checkpoint file"):
        read_masked_dataset(path)


def test_inconsistent_file_is_rejected(tmp_path: Path) -> None:
    path = write_masked_dataset(tmp_path / "m.h5", _toy())
    with h5py.File(path, "a") as f:
        y = f["train/y_observed"][()]
        y[y == -1] = 1  # labels for a hidden class
        del f["train/y_observed"]
        f["train/y_observed"] = y
    reseal_file(path)  # an edit with a valid checksum: the content checks must still catch it
    with pytest.raises(FileFormatError, match="outside the labelled classes"):
        read_masked_dataset(path)


def test_damaged_file(tmp_path: Path) -> None:
    path = write_masked_dataset(tmp_path / "m.h5", _toy())
    with h5py.File(path, "a") as f:
        del f["train/x"]
    reseal_file(path)
    with pytest.raises(FileFormatError, match="damaged or incomplete"):
        read_masked_dataset(path)


def test_user_h5_reader_refuses_susl_files(tmp_path: Path) -> None:
    path = write_masked_dataset(tmp_path / "m.h5", _toy())
    with pytest.raises(DataError, match="already a susl masked dataset"):
        read_user_h5(path)


def test_edited_file_is_refused_by_its_checksum(tmp_path: Path) -> None:
    path = write_masked_dataset(tmp_path / "m.h5", _toy())
    with h5py.File(path, "a") as f:  # h5py keeps the seal block but the content changes
        f.attrs["note"] = "edited"
    with pytest.raises(FileFormatError, match="no longer matches the checksum"):
        read_masked_dataset(path)
