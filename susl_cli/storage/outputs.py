"""Result files that susl writes for people: tables as CSV and generated arrays as HDF5.

Both writes are atomic (a temporary file in the destination folder, then a rename), and
neither replaces an existing file without `overwrite`, like every other susl output.

Sample files (HDF5, `susl_kind="samples"`):

    /                      attrs: susl_kind, format/susl versions, seed, meta (JSON: checkpoint,
                           mode, caption, class names, ...)
    /<name>                one array per column: x (N, *input_shape) float32 in input space,
                           component, mapped_class (-1 = unmapped), row, ...
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from susl_cli.errors import FileFormatError
from susl_cli.storage.atomic import write_text_atomic
from susl_cli.storage.h5 import (
    H5_READ_ERRORS,
    atomic_h5_write,
    get_json_attr,
    open_for_reading,
    put_json_attr,
    write_array,
)

KIND_SAMPLES = "samples"
ATTR_META = "meta"
ATTR_SEED = "seed"


def write_csv_atomic(path: Path, frame: pd.DataFrame, overwrite: bool,
                     inputs: Iterable[Path | None] = ()) -> Path:
    """Write `frame` as CSV (no index) so that `path` appears only once it is complete."""
    text = frame.to_csv(index=False, lineterminator="\n")
    return write_text_atomic(Path(path), text, overwrite=overwrite, inputs=inputs)


def write_samples_h5(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                     seed: int, overwrite: bool) -> Path:
    """Write generated arrays (one per column, same length) and their metadata atomically."""
    path = Path(path)
    with atomic_h5_write(path, KIND_SAMPLES, overwrite) as f:
        put_json_attr(f, ATTR_META, meta)
        f.attrs[ATTR_SEED] = int(seed)
        for name, array in arrays.items():
            write_array(f, name, np.asarray(array))
    return path


def describe_samples(path: Path) -> dict[str, Any]:
    """What a samples file holds (metadata and column shapes), without reading the arrays."""
    with open_for_reading(Path(path), KIND_SAMPLES) as f:
        meta = get_json_attr(f, ATTR_META)
        try:
            columns = {name: list(f[name].shape) for name in f}
            seed = int(f.attrs[ATTR_SEED])
        except H5_READ_ERRORS:
            raise FileFormatError(f"{str(path)!r} is a damaged samples file: write it again with "
                              "`susl sample`") from None
    if not isinstance(meta, dict):
        meta = {}
    return {"file": str(path), "kind": KIND_SAMPLES, **meta, "seed": seed, "columns": columns}
