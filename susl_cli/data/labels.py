"""Labels in the user's terms: class names (words or numbers) and the marks of "unlabelled".

A user's label column may hold words ("cat", "WALKING"), whole numbers (0, 3, 7) or both, with
unlabelled rows marked by an empty cell, NaN, -1, "" or a token of the user's choosing
(`--unlabelled-token unknown`). Every distinct label becomes one class, whatever its value:
{0, 3, 7} are three classes named "0", "3" and "7", not eight with five empty. Classes are
ordered numerically when every name is a whole number, else alphabetically, so the same file
always gives the same class ids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from susl_cli.errors import DataError

UNLABELLED = -1
UNLABELLED_MARKS = ("", "-1", "nan", "NaN", "None", "none", "NA", "N/A", "null")
# More classes than this is an identifier column or a regression target, not class labels:
# each class needs labelled rows and its own component (4 bytes x K x batch per step).
MAX_CLASSES = 1000
MAX_EXACT_INTEGER = 2**53  # the largest whole number a float64 label holds exactly


def encode_labels(columns: Sequence[np.ndarray | None], where: str,
                  unlabelled_token: str | None = None
                  ) -> tuple[list[np.ndarray | None], tuple[str, ...]]:
    """Class ids (int64, -1 = unlabelled) for each label array, and the class names.

    All arrays share one set of classes (training and test labels), so a class seen only in
    the test labels still gets an id. None entries pass through as None.
    """
    texts = [None if c is None else _as_text(_one_per_row(c, where), where, unlabelled_token)
             for c in columns]
    names = sorted({t for text in texts if text is not None for t in text if t is not None},
                   key=_sort_key)
    if len(names) > MAX_CLASSES:
        shown = ", ".join(names[:5])
        raise DataError(f"{where}: the label column has {len(names)} distinct values ({shown}, "
                        f"...), more than the {MAX_CLASSES} classes susl handles: it looks like "
                        "an identifier or a measurement; name the right column with "
                        "--label-column")
    index = {name: i for i, name in enumerate(names)}
    encoded = [None if text is None else
               np.asarray([UNLABELLED if t is None else index[t] for t in text], np.int64)
               for text in texts]
    return encoded, tuple(names)


def _one_per_row(y: np.ndarray, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: labels have shape {y.shape}, expected one label per row")
    return y


def _as_text(y: np.ndarray, where: str, token: str | None) -> list[str | None]:
    """Each label as its class name, None for unlabelled."""
    if y.dtype.kind == "b":
        return [str(bool(v)) for v in y]
    if y.dtype.kind in "iu":
        return [None if int(v) == UNLABELLED else _whole(int(v), where) for v in y.tolist()]
    if y.dtype.kind == "f":
        return [_from_float(float(v), where) for v in y.tolist()]
    if y.dtype.kind in "USO":
        return [_from_object(v, where, token) for v in y.tolist()]
    raise DataError(f"{where}: labels have type {y.dtype}: give class names (text) or whole "
                    "numbers")


def _whole(value: int, where: str) -> str:
    if value < UNLABELLED:
        raise DataError(f"{where}: label {value} is negative: class numbers are >= 0; mark "
                        "unlabelled rows with -1 or an empty cell")
    if value > MAX_EXACT_INTEGER:
        raise DataError(f"{where}: label {value} is too large to be a class number (above "
                        "2^53): store class labels as small numbers or names")
    return str(value)


def _from_float(value: float, where: str) -> str | None:
    if math.isnan(value):
        return None
    if not math.isfinite(value) or value != math.floor(value) or abs(value) > MAX_EXACT_INTEGER:
        raise DataError(f"{where}: label {value!r} is not a class: labels are names or whole "
                        "numbers, with -1 or an empty cell for unlabelled")
    return None if int(value) == UNLABELLED else _whole(int(value), where)


def _from_object(value: object, where: str, token: str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return None if int(value) == UNLABELLED else _whole(int(value), where)
    if isinstance(value, float | np.floating):
        return _from_float(float(value), where)
    text = str(value).strip()
    if text in UNLABELLED_MARKS or (token is not None and text == token):
        return None
    number = _number(text)
    if number is not None:
        return _from_float(number, where)
    return text


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _sort_key(name: str) -> tuple[int, float, str]:
    """Whole-number names numerically (2 before 10), then words alphabetically."""
    number = _number(name)
    return (0, number, "") if number is not None else (1, 0.0, name)
