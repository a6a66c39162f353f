"""Parsers for the built-in datasets' file formats (IDX, UCI HAR text and npz) and the array
checks shared with user files. Every failure is a DataError naming the file and the problem."""

from __future__ import annotations

import gzip
import math
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from susl_cli.errors import DataError

IDX_UBYTE = 0x08  # the only IDX element type the (Fashion-)MNIST files use
HAR_CHANNELS = (
    "body_acc_x", "body_acc_y", "body_acc_z",
    "body_gyro_x", "body_gyro_y", "body_gyro_z",
    "total_acc_x", "total_acc_y", "total_acc_z",
)
HAR_STEPS = 128
HAR_N_FEATURES = 561
HAR_N_CLASSES = 6


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (gzipped when it ends in .gz) into a uint8 array of its stated shape.

    Layout: two zero bytes, the element type, the number of dimensions, one big-endian uint32
    per dimension, then the elements.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path} is not a readable gzip file ({err}): it is truncated or corrupt, "
            "delete it and rerun with --download"
        ) from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != IDX_UBYTE or raw[3] == 0:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()!r})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims)
    if len(raw) - header != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} data bytes but its header promises {expected} "
            f"(shape {dims}): the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(images_path: Path, labels_path: Path, n_classes: int) -> tuple[np.ndarray, ...]:
    """Images (N, H, W) scaled to float32 [0, 1] and labels (N,) int64 from two IDX files."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path} has shape {images.shape}, expected (N, rows, cols)")
    if labels.ndim != 1:
        raise DataError(f"{labels_path} has shape {labels.shape}, expected (N,)")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if labels.size and int(labels.max()) >= n_classes:
        raise DataError(f"{labels_path} has label {int(labels.max())}, expected 0..{n_classes - 1}")
    return images.astype(np.float32) / np.float32(255.0), labels.astype(np.int64)


def read_har_npz(path: Path) -> tuple[np.ndarray, ...]:
    """x_train, y_train, x_test, y_test from the offline `uci-har-inertial.npz` (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = [np.asarray(z[k]) for k in ("x_train", "y_train", "x_test", "y_test")]
    except KeyError as err:
        raise DataError(f"{path} lacks array {err}: not the susl HAR npz") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{path} is truncated or corrupt ({err}): delete it") from None
    x_train, y_train, x_test, y_test = arrays
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        _check_har_split(path, x, y, split)
    return (x_train.astype(np.float32), y_train.astype(np.int64),
            x_test.astype(np.float32), y_test.astype(np.int64))


def _check_har_split(path: Path, x: np.ndarray, y: np.ndarray, split: str) -> None:
    if x.ndim != 3 or x.shape[1:] != (len(HAR_CHANNELS), HAR_STEPS):
        raise DataError(f"{path}: x_{split} has shape {x.shape}, expected (N, 9, 128)")
    check_same_length(x, y, f"{path} ({split})")
    if y.size and (y.min() < 0 or y.max() >= HAR_N_CLASSES):
        raise DataError(f"{path}: y_{split} has labels outside 0..5")


def read_har_folder(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw inertial windows (N, 9, 128) and 0-based labels from the official folder layout."""
    signals = root / split / "Inertial Signals"
    channels = [
        read_text_table(signals / f"{name}_{split}.txt", HAR_STEPS) for name in HAR_CHANNELS
    ]
    lengths = {len(c) for c in channels}
    if len(lengths) != 1:
        raise DataError(f"{signals}: the 9 channel files have different numbers of windows")
    x = np.stack(channels, axis=1)  # (N, 9, 128)
    y = read_har_labels(root / split / f"y_{split}.txt")
    check_same_length(x, y, str(signals))
    return x, y


def read_har_features(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The 561 engineered features (N, 561) and 0-based labels from the official folder."""
    x = read_text_table(root / split / f"X_{split}.txt", HAR_N_FEATURES)
    y = read_har_labels(root / split / f"y_{split}.txt")
    check_same_length(x, y, str(root / split / f"X_{split}.txt"))
    return x, y


def read_har_labels(path: Path) -> np.ndarray:
    """UCI HAR labels are 1-based (1 WALKING .. 6 LAYING); return them 0-based."""
    y = read_text_table(path, 1)[:, 0]
    if not np.all(np.isin(y, np.arange(1, HAR_N_CLASSES + 1))):
        raise DataError(f"{path} has labels outside 1..6: not a UCI HAR label file")
    return y.astype(np.int64) - 1


def read_text_table(path: Path, n_cols: int) -> np.ndarray:
    """A whitespace-separated numeric table with exactly `n_cols` columns, as float32."""
    try:
        frame = pd.read_csv(path, sep=r"\s+", header=None, dtype=np.float64, engine="c")
    except FileNotFoundError:
        raise DataError(f"missing file {path}") from None
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a numeric table ({_first_line(e)})") from None
    if frame.shape[1] != n_cols:
        raise DataError(f"{path} has {frame.shape[1]} columns, expected {n_cols}")
    values = frame.to_numpy(dtype=np.float32)
    check_finite(values, str(path))
    return values


def check_same_length(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if len(x) != len(y):
        raise DataError(f"{where}: x has {len(x)} rows but y has {len(y)}: they must match")


def check_finite(x: np.ndarray, where: str) -> None:
    """Reject NaN and infinities, naming the first bad row (they would poison training)."""
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1) if x.size else np.zeros(0, bool)
    if bad.any():
        raise DataError(
            f"{where}: inputs contain NaN or infinite values (first in row {int(np.argmax(bad))}): "
            "remove or impute them"
        )


def as_features(x: np.ndarray, where: str) -> np.ndarray:
    """Validate user inputs: numeric, at least one row, finite; returned as float32."""
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{where}: inputs have non-numeric type {x.dtype}: give numeric arrays")
    if np.iscomplexobj(x):
        raise DataError(f"{where}: inputs are complex numbers: give real-valued arrays")
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{where}: no examples (inputs have shape {x.shape})")
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    if x.size == 0:
        raise DataError(f"{where}: rows hold no values (inputs have shape {x.shape}): give at "
                        "least one feature column")
    check_finite(x, where)
    if x.dtype.kind == "f" and x.dtype.itemsize > 4:
        too_big = np.abs(x.reshape(len(x), -1)) > np.finfo(np.float32).max
        if too_big.any():
            row, col = np.argwhere(too_big)[0]
            raise DataError(f"{where}: value {x.reshape(len(x), -1)[row, col]:g} in row {row} "
                            "is beyond the float32 range (about 3.4e38) susl computes in: "
                            "rescale the data")
    return x.astype(np.float32)


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
