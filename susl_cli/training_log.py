"""The per-epoch training log a person can plot or watch: a CSV beside the checkpoint.

`susl train --out run.h5` keeps `run.history.csv` up to date after every epoch (one row per
finished epoch: epoch, loss terms, lr, accuracies, components used, seconds, samples/s).
It is rewritten whole, through a temporary file and a rename, so a reader never sees half a
row, and on --resume it restarts from the checkpoint's own history, so rows of epochs a kill
lost do not linger. The checkpoint's history stays the record; this file is a convenience.
Library layer: numpy-free, no typer, no rich.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

HISTORY_SUFFIX = ".history.csv"
FIRST_COLUMNS = ("epoch", "loss")


def history_csv_path(checkpoint: Path) -> Path:
    """run.h5 -> run.history.csv (beside it)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + HISTORY_SUFFIX)


def history_columns(history: Mapping[str, Sequence[float]]) -> list[str]:
    """epoch and loss first, then the other columns in the order training logged them."""
    first = [c for c in FIRST_COLUMNS if c in history]
    return first + [c for c in history if c not in first]


def write_history_csv(history: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Write one row per epoch (NaN as an empty cell) atomically; return the path."""
    path = Path(path)
    columns = history_columns(history)
    n_rows = max((len(v) for v in history.values()), default=0)
    with tempfile.NamedTemporaryFile("w", newline="", prefix=f".{path.name}.", suffix=".tmp",
                                     dir=path.parent, delete=False) as f:
        tmp = f.name
    try:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for i in range(n_rows):
                writer.writerow([_cell(history[c], i) for c in columns])
        os.chmod(tmp, 0o666 & ~_umask())  # temporary files are 0600: use the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _cell(values: Sequence[float], i: int) -> str:
    if i >= len(values):
        return ""
    value = float(values[i])
    if math.isnan(value):
        return ""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def read_history_csv(path: Path) -> dict[str, list[float]]:
    """The columns of a history CSV (empty cells as NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    return {name: [float(r[j]) if r[j] != "" else math.nan for r in body]
            for j, name in enumerate(header)}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
