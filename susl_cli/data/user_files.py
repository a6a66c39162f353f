"""Reading a user's own data: .npz (x, y[, x_test, y_test]), .csv (features + a label column)
or .h5 (datasets x, y[, x_test, y_test]). Nothing is ever unpickled."""

from __future__ import annotations

import csv
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from susl_cli.data.formats import as_features, check_same_length
from susl_cli.data.labels import encode_labels
from susl_cli.errors import DataError
from susl_cli.resources import exceeds_memory, format_bytes
from susl_cli.storage.files import check_regular_file, note_input
from susl_cli.storage.masked import read_user_h5

# x_train, y_train (-1 = unlabelled), x_test, y_test (or None), class names (index = class id)
UserArrays = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, tuple[str, ...]]
_NAMES = ("x", "y", "x_test", "y_test")
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}


def read_user_arrays(path: Path, label_column: str = "label",
                     unlabelled_token: str | None = None) -> UserArrays:
    """x_train (float32), y_train (int64, -1 = unlabelled), x_test and y_test (or None), and
    the class names: labels may be words or whole numbers (see susl_cli/data/labels.py)."""
    path = Path(path)
    return _validate(path, _read_any(path, label_column, labels_required=True),
                     unlabelled_token)


def read_user_inputs(path: Path, label_column: str = "label"
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """x (float32) and x_test (or None) of a user file whose labels are optional.

    For prediction, where labels are never used: a .npz or .h5 needs only `x`, a .csv without
    the label column is all features (with it, that column is dropped).
    """
    path = Path(path)
    raw = _read_any(path, label_column, labels_required=False)
    x = as_features(raw["x"], f"{path} (x)")
    x_test = as_features(raw["x_test"], f"{path} (x_test)") if "x_test" in raw else None
    return x, x_test


def _read_any(path: Path, label_column: str, labels_required: bool) -> dict[str, np.ndarray]:
    """The raw arrays of a .npz / .csv / .h5 user file, by suffix; labels optional on request."""
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist: check the path")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a folder: give a .npz, .csv or .h5 file")
    size = check_regular_file(path, DataError, "data file").st_size  # no FIFO, no /dev/zero
    note_input(path)  # no output of this command may replace it
    _check_size(path, size)
    required = ("x", "y") if labels_required else ("x",)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path, required=required)
    if suffix == ".csv":
        return _read_csv(path, label_column, label_required=labels_required)
    if suffix in (".h5", ".hdf5"):
        return read_user_h5(path, required=required)
    raise DataError(f"{path}: unsupported file type {suffix!r}: give a .npz, .csv or .h5 file")


CSV_MEMORY_FACTOR = 4  # pandas holds a CSV as text, then as parsed columns: a few times its size


def _check_size(path: Path, size: int) -> None:
    """Refuse a file whose reading would take more memory than is free (known before reading)."""
    factor = CSV_MEMORY_FACTOR if path.suffix.lower() == ".csv" else 1
    available = exceeds_memory(size * factor)
    if available is not None:
        raise DataError(f"{path} is {format_bytes(size)}; reading it needs about "
                        f"{format_bytes(size * factor)}, more than the "
                        f"{format_bytes(available)} of free memory: use a smaller file")


def _validate(path: Path, raw: dict[str, np.ndarray], unlabelled_token: str | None
              ) -> UserArrays:
    x = as_features(raw["x"], f"{path} (x)")
    if ("x_test" in raw) != ("y_test" in raw):
        have, lack = ("x_test", "y_test") if "x_test" in raw else ("y_test", "x_test")
        raise DataError(f"{path} has {have} but no {lack}: give both or neither")
    (y, y_test), names = encode_labels((raw["y"], raw.get("y_test")), f"{path} (labels)",
                                       unlabelled_token)
    check_same_length(x, y, str(path))
    if not (y >= 0).any():
        raise DataError(f"{path}: no training row has a label (the label column is empty): "
                        "label some rows, or check --label-column / --unlabelled-token")
    if "x_test" not in raw:
        return x, y, None, None, names
    x_test = as_features(raw["x_test"], f"{path} (x_test)")
    check_same_length(x_test, y_test, f"{path} (test set)")
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(
            f"{path}: x_test rows have shape {x_test.shape[1:]} but x rows {x.shape[1:]}"
        )
    return x, y, x_test, y_test, names


def _read_npz(path: Path, required: tuple[str, ...] = ("x", "y")) -> dict[str, np.ndarray]:
    # np.load falls back to unpickling for unknown formats; only ever hand it a zip archive.
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not an .npz archive (truncated or corrupt): recreate it "
                        "with numpy.savez")
    _check_npz_members(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            present = set(archive.files)
            if not set(required) <= present:
                raise DataError(
                    f"{path} lacks array(s) {', '.join(sorted(set(required) - present))} (found: "
                    f"{', '.join(sorted(present)) or 'nothing'}): save inputs as x and labels as y"
                )
            return {k: np.asarray(archive[k]) for k in _NAMES if k in present}
    except ValueError as err:
        if "pickle" in str(err):
            raise DataError(f"{path} holds object arrays, which need pickle (never used by "
                            "susl): save plain numeric arrays") from None
        raise DataError(f"{path} is truncated or corrupt ({err})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError
            ) as err:
        raise DataError(f"{path} is truncated or corrupt ({type(err).__name__}: {err})") from None


def _check_npz_members(path: Path) -> None:
    """Read each array's .npy header (not its data) and refuse sizes that cannot be right.

    A damaged or hostile archive can declare an array far larger than its data (numpy would
    allocate it before finding out) or one that decompresses to more than free memory.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.removesuffix(".npy") not in _NAMES:
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version not in _NPY_HEADER_READERS:
                        continue  # numpy itself will say what is wrong
                    shape, _, dtype = _NPY_HEADER_READERS[version](member)
                if dtype.hasobject:  # its bytes are a pickle, not numbers
                    raise DataError(f"{path}: {info.filename} is an object array, which needs "
                                    "pickle (never used by susl): save plain numeric arrays")
                n_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                name = info.filename
                if n_bytes > info.file_size:
                    raise DataError(f"{path}: {name} declares shape {shape} "
                                    f"({format_bytes(n_bytes)}) but holds "
                                    f"{format_bytes(info.file_size)}: the file is truncated or "
                                    "corrupt")
                available = exceeds_memory(n_bytes)
                if available is not None:
                    raise DataError(f"{path}: {name} needs {format_bytes(n_bytes)}, more than the "
                                    f"{format_bytes(available)} of free memory")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
            NotImplementedError, SyntaxError, TypeError) as err:
        detail = " ".join(str(err).split())[:160]
        raise DataError(f"{path} is truncated or corrupt ({type(err).__name__}: {detail})"
                        ) from None


def _check_last_line(path: Path, n_columns: int) -> None:
    """Refuse a CSV cut short: its last line has no line end and missing or empty fields.

    CSV has no checksum, so this is the one sign of truncation that can be read: every CSV
    writer ends each row with a line break, and pandas would silently fill the missing cells
    (an empty label would even read as "unlabelled").
    """
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(size - (1 << 16), 0))
        tail = fh.read()
    if not tail or tail.endswith((b"\n", b"\r")):
        return
    last = tail.splitlines()[-1].decode("utf-8", "replace")
    fields = next(csv.reader([last]), [])
    if len(fields) != n_columns or any(not field.strip() for field in fields):
        raise DataError(
            f"{path}: the last line has no line break and {len(fields)} of {n_columns} fields, "
            "some empty: the file looks cut short; if it is complete, end it with a newline"
        )


def _read_csv(path: Path, label_column: str, label_required: bool = True
              ) -> dict[str, np.ndarray]:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path} is not a readable CSV file ({first})") from None
    _check_last_line(path, frame.shape[1])
    if label_column not in frame.columns and not label_required:
        frame = frame.assign(**{label_column: np.nan})  # all unlabelled
    if label_column not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:8]))
        raise DataError(
            f"{path} has no label column {label_column!r} (columns: {shown}): name it with "
            "--label-column"
        )
    _refuse_second_label_column(path, frame, label_column)
    features = _drop_index_column(frame.drop(columns=[label_column]))
    if features.shape[1] == 0:
        raise DataError(f"{path} has no feature columns besides {label_column!r}")
    text = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if text:
        raise DataError(
            f"{path}: column(s) {', '.join(text[:5])} are not numeric: susl needs numeric "
            "features (encode or drop them)"
        )
    return {"x": features.to_numpy(dtype=np.float64), "y": _csv_labels(frame[label_column])}


def _csv_labels(labels: pd.Series) -> np.ndarray:
    """The label cells as they are (names or numbers; empty cells as None)."""
    return np.asarray([None if pd.isna(v) else v for v in labels.tolist()], dtype=object)


def _refuse_second_label_column(path: Path, frame: pd.DataFrame, label_column: str) -> None:
    """pandas renames a repeated header `label` to `label.1`: it would be read as a feature."""
    repeats = [str(c) for c in frame.columns if str(c).startswith(f"{label_column}.")
               and str(c)[len(label_column) + 1:].isdigit()]
    if repeats:
        raise DataError(f"{path} has the label column {label_column!r} more than once (pandas "
                        f"read the repeat as {repeats[0]!r}): keep one")


def _drop_index_column(features: pd.DataFrame) -> pd.DataFrame:
    """Drop the unnamed row-number column that `DataFrame.to_csv()` writes by default."""
    first = str(features.columns[0]) if features.shape[1] else ""
    if first.startswith("Unnamed: ") and features.shape[1] > 1:
        values = features.iloc[:, 0].to_numpy()
        n = len(values)
        if n and any(np.array_equal(values, np.arange(start, start + n)) for start in (0, 1)):
            return features.iloc[:, 1:]
    return features
