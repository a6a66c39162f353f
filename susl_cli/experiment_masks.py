"""The experiment grid's masks: which mask each regime needs, writing the missing ones and
checking that an existing one is the mask the grid asks for.

Library layer, like experiment_runs.py (which imports `MaskSpec` from here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from susl_cli.data.masking import make_masked_dataset
from susl_cli.data.sources import Dataset, load_dataset
from susl_cli.errors import DataError, UsageError
from susl_cli.storage.masked import describe_masked_dataset, file_sha256, write_masked_dataset


@dataclass(frozen=True)
class MaskSpec:
    """One mask file: `kind` us/ss/sus, or ss_known (data restricted to the labelled classes)."""

    kind: str
    seed: int
    path: Path


class DatasetLoader:
    """Loads the dataset at most once, and only when a mask has to be made."""

    def __init__(self, dataset: str, data_dir: Path | None) -> None:
        self.dataset = dataset
        self.data_dir = data_dir
        self._data: Dataset | None = None

    def get(self) -> Dataset:
        if self._data is None:
            self._data = load_dataset(self.dataset, data_dir=self.data_dir)
        return self._data


def restrict_to_classes(data: Dataset, classes: Sequence[int]) -> Dataset:
    """The training and test points of `classes` only, relabelled 0..len(classes)-1 in order.

    Paper Table 1's "SS" arm: a semi-supervised dataset holding the labelled classes only.
    """
    keep = sorted(int(c) for c in classes)
    new_id = np.full(data.n_classes, -1, dtype=np.int64)
    new_id[keep] = np.arange(len(keep))

    def subset(x: np.ndarray | None, y: np.ndarray | None) -> tuple[Any, Any]:
        if x is None or y is None:
            return None, None
        rows = np.isin(y, keep)
        return x[rows], new_id[y[rows]]

    x_train, y_train = subset(data.x_train, data.y_train)
    x_test, y_test = subset(data.x_test, data.y_test)
    return Dataset(name=data.name, x_train=x_train, y_train=y_train, x_test=x_test,
                   y_test=y_test, class_names=tuple(data.class_names[c] for c in keep),
                   input_kind=data.input_kind, source_checksum=data.source_checksum)


def _expected(kind: str, labelled: tuple[int, ...], n_classes: int) -> tuple[tuple[int, ...], int]:
    """(labelled classes, number of classes) a mask of `kind` must have."""
    if kind == "us":
        return (), n_classes
    if kind == "ss":
        return tuple(range(n_classes)), n_classes
    if kind == "ss_known":
        return tuple(range(len(labelled))), len(labelled)
    return labelled, n_classes


def prepare_masks(masks: Sequence[MaskSpec], labelled: tuple[int, ...], n_classes: int,
                  label_fraction: float, loader: DatasetLoader) -> Callable[[Path], str]:
    """Write the missing masks, check the existing ones; return mask path -> sha256."""
    hashes: dict[Path, str] = {}
    for mask in masks:
        classes, n = _expected(mask.kind, labelled, n_classes)
        if mask.path.exists():
            hashes[mask.path] = _check_mask(mask, classes, n, label_fraction)
            continue
        data = loader.get()
        if data.x_test is None or data.y_test is None or len(data.y_test) == 0:
            raise DataError(f"{loader.dataset!r} has no test set, and the experiment scores "
                            "test sets: add x_test and y_test to the file")
        source = restrict_to_classes(data, labelled) if mask.kind == "ss_known" else data
        masked = make_masked_dataset(source, classes, label_fraction=label_fraction,
                                     seed=mask.seed)
        mask.path.parent.mkdir(parents=True, exist_ok=True)  # only once data are in hand
        write_masked_dataset(mask.path, masked)
        hashes[mask.path] = file_sha256(mask.path)
    return lambda path: hashes[Path(path)]


def _check_mask(mask: MaskSpec, classes: tuple[int, ...], n_classes: int,
                label_fraction: float) -> str:
    """The sha256 of an existing mask, after checking it is the one the grid needs."""
    s = describe_masked_dataset(mask.path)
    problems = []
    if tuple(s["labelled_classes"]) != classes:
        problems.append(f"labelled classes {s['labelled_classes']}, expected {list(classes)}")
    if len(s["class_names"]) != n_classes:
        problems.append(f"{len(s['class_names'])} classes, expected {n_classes}")
    if int(s["seed"]) != mask.seed:
        problems.append(f"seed {s['seed']}, expected {mask.seed}")
    if classes and s["label_fraction"] != label_fraction:
        problems.append(f"label fraction {s['label_fraction']}, expected {label_fraction}")
    if not s["n_test"]:
        problems.append("no test set")
    if problems:
        raise UsageError(f"{str(mask.path)!r} is not the mask this experiment needs "
                         f"({'; '.join(problems)}): use another --out, or delete it")
    return str(s["sha256"])
