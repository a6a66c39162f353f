"""Checkpoint files: everything needed to resume training or use the model, without pickle.

Layout (HDF5, written atomically):

    /                     attrs: susl_kind="checkpoint", format/susl versions, meta (JSON:
                          model name, configs, epoch, seed, mask hash, classes, ...)
    /weights/<name>       model parameters and buffers (state_dict keys, '.' kept in names)
    /optimizer/<name>     optimizer state tensors, flattened as "<param index>/<key>"
    /history/<column>     one value per completed epoch (loss terms, accuracies, timing)
    /transform/<name>     the input transform fitted on the training inputs
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from susl_cli.errors import FileFormatError
from susl_cli.storage.h5 import (
    KIND_CHECKPOINT,
    atomic_h5_write,
    get_json_attr,
    open_for_reading,
    put_json_attr,
    read_array,
    write_array,
)

ATTR_META = "meta"
GROUPS = ("weights", "optimizer", "history", "transform")


@dataclass
class CheckpointData:
    """Plain arrays and JSON-able metadata; the training layer converts to and from torch."""

    meta: dict[str, Any]
    weights: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    history: dict[str, np.ndarray] = field(default_factory=dict)
    transform: dict[str, np.ndarray] = field(default_factory=dict)


def write_checkpoint(path: Path, data: CheckpointData, overwrite: bool = True, *,
                     may_replace_input: bool = False) -> None:
    """Write a checkpoint atomically; `may_replace_input`: a resumed run updating its own file."""
    with atomic_h5_write(Path(path), KIND_CHECKPOINT, overwrite,
                         may_replace_input=may_replace_input) as f:
        put_json_attr(f, ATTR_META, data.meta)
        for group_name in GROUPS:
            group = f.create_group(group_name)
            for name, array in getattr(data, group_name).items():
                # h5py treats '/' as a path separator: keep flattened keys in one group
                write_array(group, name.replace("/", "|"), np.asarray(array))


def read_checkpoint(path: Path, *, with_optimizer: bool = False) -> CheckpointData:
    with open_for_reading(Path(path), KIND_CHECKPOINT) as f:
        meta = get_json_attr(f, ATTR_META)
        groups: dict[str, dict[str, np.ndarray]] = {}
        for group_name in GROUPS:
            if group_name == "optimizer" and not with_optimizer:
                groups[group_name] = {}
                continue
            group = f[group_name]
            groups[group_name] = {name.replace("|", "/"): read_array(group, name)
                                  for name in group}
    _check_meta(path, meta)
    for group_name in ("weights", "transform"):
        for name, array in groups[group_name].items():
            if array.dtype.kind in "fc" and not np.isfinite(array).all():
                raise FileFormatError(
                    f"{str(path)!r} holds NaN or infinite values in {group_name} {name!r}: the "
                    "run diverged or the file is corrupt; retrain, or resume from a good copy"
                )
    return CheckpointData(meta=meta, **groups)


def _check_meta(path: Path, meta: Any) -> None:
    """The metadata every reader relies on: a dict with the configs and a completed-epoch count."""
    problem = None
    if not isinstance(meta, dict):
        problem = f"metadata is a {type(meta).__name__}, not a mapping"
    elif not all(isinstance(meta.get(k), dict) for k in ("model_config", "train_config")):
        problem = "the model or training configuration is missing"
    elif not isinstance(meta.get("epoch"), int) or isinstance(meta["epoch"], bool) \
            or meta["epoch"] < 0:
        problem = f"epoch {meta.get('epoch')!r} is not a count"
    if problem:
        raise FileFormatError(f"{str(path)!r} has damaged metadata ({problem}): recreate it")


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """Only the metadata (cheap: no arrays are read)."""
    with open_for_reading(Path(path), KIND_CHECKPOINT) as f:
        meta = get_json_attr(f, ATTR_META)
        _check_meta(Path(path), meta)
        meta["n_history_epochs"] = int(len(f["history"]["epoch"])) if "epoch" in f["history"] else 0
    return meta
