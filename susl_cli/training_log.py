"""The per-epoch training log a person can plot or watch: a CSV beside the checkpoint.

`susl train --out run.h5` keeps `run.history.csv` up to date after every epoch (one row per
finished epoch: epoch, loss terms, lr, accuracies, components used, seconds, samples/s).
It is rewritten whole by susl's one atomic writer (storage/atomic.py: temporary file, rename,
Ctrl-C held back), so a reader never sees half a row; `susl train` checks and locks it like
its checkpoint before any work. On --resume it restarts from the checkpoint's own history, so
rows of epochs a kill lost do not linger. The checkpoint's history stays the record; this
file is a convenience. Library layer: numpy-free, no typer, no rich.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from susl_cli.storage.atomic import write_text_atomic
from susl_cli.storage.files import MAX_NAME_BYTES

HISTORY_SUFFIX = ".history.csv"
FIRST_COLUMNS = ("epoch", "loss")


def history_csv_path(checkpoint: Path) -> Path:
    """run.h5 -> run.history.csv (beside it).

    A checkpoint name near the file-system limit (255 bytes) would give a log name beyond it:
    its stem is then cut and completed with a hash of the whole name, so that two long names
    sharing a beginning still get different logs.
    """
    checkpoint = Path(checkpoint)
    stem, room = checkpoint.stem, MAX_NAME_BYTES - len(HISTORY_SUFFIX.encode())
    if len(stem.encode()) > room:
        digest = hashlib.sha256(checkpoint.name.encode()).hexdigest()[:16]
        stem = stem.encode()[:room - 17].decode("utf-8", "ignore") + f"~{digest}"
    return checkpoint.with_name(stem + HISTORY_SUFFIX)


def history_columns(history: Mapping[str, Sequence[float]]) -> list[str]:
    """epoch and loss first, then the other columns in the order training logged them."""
    first = [c for c in FIRST_COLUMNS if c in history]
    return first + [c for c in history if c not in first]


def write_history_csv(history: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Write one row per epoch (NaN as an empty cell) atomically; return the path.

    The log belongs to its checkpoint and is replaced at every epoch: no --overwrite needed,
    but, like every output, never a file the command reads.
    """
    columns = history_columns(history)
    n_rows = max((len(v) for v in history.values()), default=0)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    for i in range(n_rows):
        writer.writerow([_cell(history[c], i) for c in columns])
    return write_text_atomic(Path(path), text.getvalue(), overwrite=True)


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
