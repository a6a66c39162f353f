"""Dataset loading: IDX parsing, HAR (npz and official folder), user files, folder resolution."""

from __future__ import annotations

import gzip
from pathlib import Path

import h5py
import numpy as np
import pytest

from susl_cli.data import formats
from susl_cli.data.checksums import file_sha256
from susl_cli.data.sources import (
    FASHION_NAMES,
    HAR_NAMES,
    cache_dir,
    load_dataset,
    search_dirs,
)
from susl_cli.errors import DataError, UsageError
from tests.data_helpers import idx_bytes, write_har_folder, write_idx, write_npz

# --- IDX -------------------------------------------------------------------------------------


def _noise(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=shape)


def test_read_idx_tiny_synthetic(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(formats.read_idx(write_idx(tmp_path / "a.gz", images)), images)
    raw = write_idx(tmp_path / "a.idx", images, gz=False)
    np.testing.assert_array_equal(formats.read_idx(raw), images)


def test_read_idx_pair_scales_to_unit_interval(tmp_path: Path) -> None:
    images = np.array([[[0, 255], [51, 102]]] * 3, dtype=np.uint8)
    x, y = formats.read_idx_pair(write_idx(tmp_path / "i.gz", images),
                                 write_idx(tmp_path / "l.gz", np.array([0, 9, 4])), 10)
    assert x.dtype == np.float32 and x.shape == (3, 2, 2)
    assert x.min() == 0.0 and x.max() == 1.0 and np.isclose(x[0, 1, 0], 0.2)
    assert y.dtype == np.int64 and y.tolist() == [0, 9, 4]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (gzip.compress(b"\x00\x00\x09\x01" + b"\x00\x00\x00\x01" + b"x"), "bad magic"),
        (gzip.compress(b"\x12\x34\x08\x01"), "bad magic"),
        (gzip.compress(b"\x00\x00"), "bad magic"),
        (gzip.compress(idx_bytes(np.zeros((5, 2, 2)))[:-3]), "truncated or corrupt"),
        (gzip.compress(idx_bytes(np.zeros((5, 2, 2))) + b"extra"), "truncated or corrupt"),
        (gzip.compress(b"\x00\x00\x08\x03\x00\x00"), "truncated inside its IDX header"),
        (gzip.compress(idx_bytes(_noise((50, 2, 2))))[:100], "not a readable gzip"),
        (b"this is not gzip at all", "not a readable gzip"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        formats.read_idx(path)


def test_read_idx_pair_rejects_mismatched_files(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "i.gz", np.zeros((4, 2, 2)))
    with pytest.raises(DataError, match="4 images but .* 3 labels"):
        formats.read_idx_pair(images, write_idx(tmp_path / "l.gz", np.zeros(3)), 10)
    with pytest.raises(DataError, match="label 12"):
        formats.read_idx_pair(images, write_idx(tmp_path / "l2.gz", np.full(4, 12)), 10)


def test_real_mnist(data_dir: Path) -> None:
    data = load_dataset("mnist", data_dir=data_dir)
    assert data.x_train.shape == (60000, 28, 28) and data.x_train.dtype == np.float32
    assert data.x_test.shape == (10000, 28, 28) and data.y_test.shape == (10000,)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert np.bincount(data.y_train).tolist() == [5923, 6742, 5958, 6131, 5842,
                                                  5421, 5918, 6265, 5851, 5949]
    assert data.class_names == tuple("0123456789") and data.input_kind == "image"
    assert len(data.source_checksum) == 64


# --- HAR -------------------------------------------------------------------------------------


def test_har_from_offline_npz(data_dir: Path) -> None:
    data = load_dataset("har", data_dir=data_dir)
    assert data.x_train.shape == (7352, 9, 128) and data.x_test.shape == (2947, 9, 128)
    assert np.bincount(data.y_train).tolist() == [1226, 1073, 986, 1286, 1374, 1407]
    assert data.class_names == HAR_NAMES and data.input_kind == "real"
    assert data.source_checksum == file_sha256(data_dir / "uci-har" / "uci-har-inertial.npz")


def test_har_from_official_folder_layout(tmp_path: Path) -> None:
    write_har_folder(tmp_path, n_train=12, n_test=6)
    data = load_dataset("har", data_dir=tmp_path)
    assert data.x_train.shape == (12, 9, 128) and data.x_test.shape == (6, 9, 128)
    assert data.y_train.tolist() == [c % 6 for c in range(12)]  # 1-based on disk
    signals = tmp_path / "uci-har" / "UCI HAR Dataset" / "train" / "Inertial Signals"
    first = np.loadtxt(signals / "body_gyro_y_train.txt", dtype=np.float32)
    np.testing.assert_allclose(data.x_train[:, 4, :], first)  # channel order as documented


def test_har_folder_with_a_bad_channel_file(tmp_path: Path) -> None:
    write_har_folder(tmp_path)
    bad = tmp_path / "uci-har" / "UCI HAR Dataset" / "test" / "Inertial Signals"
    (bad / "total_acc_z_test.txt").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(DataError, match="has 3 columns, expected 128"):
        load_dataset("har", data_dir=tmp_path)


def test_har_features_missing_says_why(data_dir: Path) -> None:
    with pytest.raises(DataError, match="not in the offline copy.*--download"):
        load_dataset("har-features", data_dir=data_dir)


def test_har_features_when_present(tmp_path: Path) -> None:
    write_har_folder(tmp_path, n_train=8, n_test=4, features=True)
    data = load_dataset("har-features", data_dir=tmp_path)
    assert data.x_train.shape == (8, 561) and data.x_test.shape == (4, 561)


# --- where files are found -------------------------------------------------------------------


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SUSL_DATA_DIR", str(tmp_path / "env"))
    assert search_dirs(tmp_path / "cli") == [tmp_path / "cli"]
    assert search_dirs(None) == [tmp_path / "env", tmp_path / "cache"]
    monkeypatch.delenv("SUSL_DATA_DIR")
    assert search_dirs(None) == [tmp_path / "cache"] and cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("SUSL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "susl"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid under the XDG spec: ignored
    assert cache_dir() == Path.home() / ".cache" / "susl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "susl"


def test_env_data_dir_is_used(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUSL_DATA_DIR", str(data_dir))
    assert load_dataset("har").x_train.shape == (7352, 9, 128)


def test_missing_files_error_names_files_places_and_fixes(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    text = str(err.value)
    for part in ("train-images-idx3-ubyte.gz", str(tmp_path / "fashion-mnist"), "--data-dir",
                 "SUSL_DATA_DIR", "--download"):
        assert part in text


def test_corrupt_builtin_file_fails_its_checksum(tmp_path: Path, data_dir: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in (data_dir / "mnist").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:1000])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("mnist", data_dir=tmp_path)


def test_unknown_dataset_name() -> None:
    with pytest.raises(UsageError, match="unknown dataset 'cifar'.*mnist, fashion-mnist, har"):
        load_dataset("cifar")


def test_fashion_class_names_follow_the_readme() -> None:
    assert FASHION_NAMES[0] == "T-shirt/top" and FASHION_NAMES[9] == "Ankle boot"


# --- user files ------------------------------------------------------------------------------


def test_user_npz_with_test_set_and_unlabelled_points(tmp_path: Path) -> None:
    y = np.arange(30) % 3
    y[:6] = -1
    path = write_npz(tmp_path / "d.npz", n=30, y=y, x_test=np.zeros((4, 4)), y_test=[0, 1, 2, 2])
    data = load_dataset(str(path))
    assert data.name == "d.npz" and data.class_names == ("0", "1", "2")
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert (data.y_train[:6] == -1).all() and data.x_test.shape == (4, 4)
    assert data.input_kind == "real" and data.source_checksum == file_sha256(path)


def test_user_npz_in_unit_interval_is_image_like(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "img.npz", x=np.random.default_rng(0).random((10, 2, 2)),
                     y=np.arange(10) % 2)
    data = load_dataset(str(path))
    assert data.input_kind == "image" and data.x_train.shape == (10, 2, 2)
    assert data.x_test is None and data.y_test is None


def test_user_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,target\n0.5,1,0\n1.5,2,\n2.5,3,-1\n3.5,4,1\n")
    data = load_dataset(str(path), label_column="target")
    assert data.x_train.tolist() == [[0.5, 1], [1.5, 2], [2.5, 3], [3.5, 4]]
    assert data.y_train.tolist() == [0, -1, -1, 1] and data.n_classes == 2


def test_user_h5(tmp_path: Path) -> None:
    path = tmp_path / "u.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.ones((5, 3))
        f["y"] = np.array([0, 1, -1, 1, 0])
    data = load_dataset(str(path))
    assert data.x_train.shape == (5, 3) and data.y_train.tolist() == [0, 1, -1, 1, 0]


def _h5(path: Path, **arrays: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for name, value in arrays.items():
            f[name] = value
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write_npz(p / "a.npz", y=np.arange(59) % 3), "60 rows but y has 59"),
        (lambda p: write_npz(p / "a.npz", x=np.full((60, 2), np.nan)), "NaN or infinite"),
        (lambda p: write_npz(p / "a.npz", x=np.r_[np.zeros((59, 1)), [[np.inf]]]), "row 59"),
        (lambda p: write_npz(p / "a.npz", y=np.full(60, 1.5)), "label 1.5"),
        (lambda p: write_npz(p / "a.npz", y=np.full(60, -3)), "label -3"),
        (lambda p: write_npz(p / "a.npz", x_test=np.zeros((2, 4))), "x_test but no y_test"),
        (lambda p: write_npz(p / "a.npz", x=np.array(["a"] * 60)), "non-numeric"),
        (lambda p: np.savez(p / "a.npz", x=np.zeros(3)), "lacks array(s) y"),
        (lambda p: np.savez(p / "a.npz", x=np.zeros(2), y=np.array([{}, 1], dtype=object)),
         "pickle"),
        (lambda p: (p / "a.npz").write_bytes(b"garbage"), "not an .npz archive"),
        (lambda p: (p / "a.csv").write_text("a,label\nx,1\n"), "column(s) a are not numeric"),
        (lambda p: (p / "a.csv").write_text("a,b\n1,2\n"), "no label column 'label'"),
        (lambda p: (p / "a.csv").write_text("a,b,label\n1,2,0\n2\n"), "NaN or infinite"),
        (lambda p: (p / "a.csv").write_bytes(b""), "not a readable CSV"),
        (lambda p: (p / "a.h5").write_bytes(b"not hdf5"), "not a readable HDF5"),
        (lambda p: _h5(p / "a.h5", x=np.zeros((2, 2))), "lacks dataset(s) y"),
        (lambda p: _h5(p / "a.h5", x=np.zeros((2, 2)), y=np.zeros(3)), "2 rows but y has 3"),
        (lambda p: (p / "a.txt").write_text("1 2"), "unsupported file type"),
    ],
)
def test_bad_user_files(tmp_path: Path, make, message: str) -> None:
    make(tmp_path)
    path = next(p for p in tmp_path.iterdir())
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(str(path))


def test_truncated_npz(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "t.npz", n=2000)
    path.write_bytes(path.read_bytes()[:-200])  # central directory gone
    with pytest.raises(DataError, match="npz|corrupt"):
        load_dataset(str(path))


def test_missing_user_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.npz"))
