"""Masked-dataset files: the output of `susl mask` and the input of training.

Layout (HDF5, written atomically by `atomic_h5_write`):

    /                      attrs: susl_kind="masked-dataset", format/susl versions, seed,
                                  metadata (JSON), class_names (JSON), input_kind
    /train/x               (N, ...) float32 inputs
    /train/y_observed      (N,) int64, -1 = unlabelled: the only labels training may read
    /test/x, /test/y       optional test set, never masked
    /evaluation_only/y_train_true
                           (N,) int64 true labels of every training point, for evaluating
                           clustering of the unlabelled points; training code never reads it
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from susl_cli.data.checksums import file_sha256
from susl_cli.errors import DataError, FileFormatError
from susl_cli.storage.h5 import (
    ATTR_FORMAT_VERSION,
    ATTR_KIND,
    ATTR_SUSL_VERSION,
    H5_READ_ERRORS,
    KIND_MASKED_DATASET,
    atomic_h5_write,
    check_declared_size,
    check_regular_file,
    get_json_attr,
    open_for_reading,
    put_json_attr,
    read_array,
    refuse_indirection,
    verify_file,
    write_array,
)
from susl_cli.storage.rows import MaskRows

__all__ = [
    "MaskMetadata", "MaskedDataset", "describe_masked_dataset", "file_sha256",
    "read_masked_dataset", "read_user_h5", "write_masked_dataset",
]

ATTR_METADATA = "metadata"
ATTR_CLASS_NAMES = "class_names"
ATTR_INPUT_KIND = "input_kind"
ATTR_SEED = "seed"
GROUP_TRAIN, GROUP_TEST, GROUP_EVAL = "train", "test", "evaluation_only"
EVAL_NOTE = (
    "True labels of all training points, kept only to evaluate clustering of the unlabelled "
    "points. Training code never reads this group; it trains on /train/y_observed."
)
INPUT_KINDS = ("image", "real")


@dataclass(frozen=True)
class MaskMetadata:
    """How a mask was made: enough to recreate it and to check what a model was trained on."""

    dataset: str                        # built-in name or the user file's name
    source_checksum: str                # sha256 identifying the source data files
    labelled_classes: tuple[int, ...]   # classes with some labels (sorted)
    hidden_classes: tuple[int, ...]     # classes with no labels at all
    labelled_counts: tuple[int, ...]    # labelled training points per class 0..C-1
    seed: int                           # mask seed (numpy default_rng)
    regime: str                         # "US", "SS" or "SUS"
    created_utc: str                    # ISO 8601 creation time
    label_fraction: float | None = None   # exactly one of these two is set,
    labels_per_class: int | None = None   # unless no class is labelled
    input_features: str | None = None     # feature set chosen at mask time (None: raw); train
                                          # uses it unless --input-features says otherwise
    # "masked": susl hid labels (the paper's protocol); "as-given": the user's own partial
    # labels were kept, so classes nobody labelled may exist that no file names
    label_source: str = "masked"
    test_fraction: float | None = None    # share of rows split off as the test set by susl
    train_subset: int | None = None       # training points kept (seeded draw); None: all

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MaskMetadata:
        tuples = ("labelled_classes", "hidden_classes", "labelled_counts")
        fields = {k: tuple(int(v) for v in data[k]) if k in tuples else data[k]
                  for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)


@dataclass(frozen=True, eq=False)
class MaskedDataset:
    """Training inputs with partly observed labels, the untouched test set and the metadata."""

    x_train: np.ndarray | MaskRows  # (N, ...) float32; MaskRows: left on disk (streamed)
    y_observed: np.ndarray         # (N,) int64, -1 = unlabelled
    x_test: np.ndarray | None      # (M, ...) float32, or None
    y_test: np.ndarray | None      # (M,) int64, or None
    class_names: tuple[str, ...]   # index = class id
    input_kind: str                # "image" (values in [0, 1]) or "real"
    metadata: MaskMetadata
    y_train_true: np.ndarray | None = None  # evaluation only; None unless asked for

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def labelled_classes(self) -> tuple[int, ...]:
        return self.metadata.labelled_classes

    @property
    def hidden_classes(self) -> tuple[int, ...]:
        return self.metadata.hidden_classes

    @property
    def regime(self) -> str:
        return self.metadata.regime

    @property
    def is_labelled(self) -> np.ndarray:
        """(N,) bool: which training points carry an observed label."""
        return self.y_observed >= 0


def write_masked_dataset(path: Path, masked: MaskedDataset, overwrite: bool = False) -> Path:
    """Write `masked` to `path` atomically; refuses to replace a file unless `overwrite`."""
    with atomic_h5_write(Path(path), KIND_MASKED_DATASET, overwrite) as f:
        put_json_attr(f, ATTR_METADATA, masked.metadata.to_json())
        put_json_attr(f, ATTR_CLASS_NAMES, list(masked.class_names))
        f.attrs[ATTR_INPUT_KIND] = masked.input_kind
        f.attrs[ATTR_SEED] = masked.metadata.seed
        train = f.create_group(GROUP_TRAIN)
        write_array(train, "x", masked.x_train.astype(np.float32, copy=False), by_rows=True)
        write_array(train, "y_observed", masked.y_observed.astype(np.int64, copy=False))
        if masked.x_test is not None and masked.y_test is not None:
            test = f.create_group(GROUP_TEST)
            write_array(test, "x", masked.x_test.astype(np.float32, copy=False))
            write_array(test, "y", masked.y_test.astype(np.int64, copy=False))
        if masked.y_train_true is not None:
            evaluation = f.create_group(GROUP_EVAL)
            evaluation.attrs["note"] = EVAL_NOTE
            write_array(evaluation, "y_train_true", masked.y_train_true.astype(np.int64))
    return Path(path)


def read_masked_dataset(path: Path, *, with_true_labels: bool = False,
                        stream_cache_bytes: int | None = None) -> MaskedDataset:
    """Load a masked-dataset file, checking shapes, types and label ranges.

    The evaluation-only true labels are loaded only with `with_true_labels=True` (evaluation
    code); training calls this without it, so it cannot read them by accident.
    With `stream_cache_bytes` the training inputs stay on disk: x_train is an open `MaskRows`
    (that HDF5 chunk cache; the caller closes it), the test set is not read, and the inputs'
    finiteness is checked as they are read (preprocess.fit_transform).
    """
    with open_for_reading(Path(path), KIND_MASKED_DATASET) as f:
        metadata = MaskMetadata.from_json(get_json_attr(f, ATTR_METADATA))
        class_names = tuple(str(c) for c in get_json_attr(f, ATTR_CLASS_NAMES))
        streamed = stream_cache_bytes is not None
        problem = _layout_problem(f) if streamed else None
        if problem:
            raise FileFormatError(f"{str(path)!r} is inconsistent ({problem}): recreate it "
                                  "with susl mask")
        x_train = None if streamed else read_array(f[GROUP_TRAIN], "x")
        y_observed = read_array(f[GROUP_TRAIN], "y_observed")
        x_test = y_test = y_true = None
        if GROUP_TEST in f and not streamed:
            x_test, y_test = read_array(f[GROUP_TEST], "x"), read_array(f[GROUP_TEST], "y")
        if with_true_labels and GROUP_EVAL in f:
            y_true = read_array(f[GROUP_EVAL], "y_train_true")
        masked = MaskedDataset(
            x_train=x_train, y_observed=y_observed, x_test=x_test, y_test=y_test,
            class_names=class_names, input_kind=str(f.attrs[ATTR_INPUT_KIND]),
            metadata=metadata, y_train_true=y_true,
        )
    if stream_cache_bytes is None:
        _validate(Path(path), masked)
        return masked
    # the file is verified and closed: reopen it for reading rows
    masked = replace(masked, x_train=MaskRows(Path(path), stream_cache_bytes))
    try:
        _validate(Path(path), masked)
    except FileFormatError:
        masked.x_train.close()
        raise
    return masked


def _validate(path: Path, m: MaskedDataset) -> None:
    """Reject files whose arrays disagree with each other or with the metadata."""
    def bad(what: str) -> FileFormatError:
        return FileFormatError(
            f"{str(path)!r} is inconsistent ({what}): recreate it with susl mask"
        )

    n = len(m.x_train)
    if m.x_train.dtype != np.float32 or m.x_train.ndim < 2:
        raise bad(f"train inputs are {m.x_train.dtype} {m.x_train.shape}")
    if m.y_observed.dtype != np.int64 or m.y_observed.shape != (n,):
        raise bad(f"observed labels are {m.y_observed.dtype} {m.y_observed.shape}")
    if m.input_kind not in INPUT_KINDS:
        raise bad(f"unknown input kind {m.input_kind!r}")
    for name, x in (("train", m.x_train), ("test", m.x_test)):
        if isinstance(x, np.ndarray) and x.size and not np.isfinite(x).all():
            raise bad(f"{name} inputs contain NaN or infinite values")
    observed = m.y_observed[m.y_observed >= 0]
    below = m.y_observed.size > 0 and m.y_observed.min() < -1
    if below or not np.isin(observed, m.labelled_classes).all():
        raise bad("observed labels outside the labelled classes")
    counts = np.bincount(observed, minlength=m.n_classes)
    if len(counts) != m.n_classes or tuple(int(c) for c in counts) != m.metadata.labelled_counts:
        raise bad("labelled counts differ from the metadata")
    if m.x_test is not None and m.y_test is not None:
        if m.x_test.shape[1:] != m.x_train.shape[1:] or m.y_test.shape != (len(m.x_test),):
            raise bad(f"test shapes {m.x_test.shape} / {m.y_test.shape}")
    if m.y_train_true is not None and m.y_train_true.shape != (n,):
        raise bad("evaluation labels do not match the training rows")


def _layout_problem(f: h5py.File) -> str | None:
    """What is wrong with the arrays' shapes and types, read from the file's metadata only."""
    x, y = f[GROUP_TRAIN]["x"], f[GROUP_TRAIN]["y_observed"]
    if x.dtype != np.float32 or x.ndim < 2:
        return f"train inputs are {x.dtype} {x.shape}"
    if y.dtype != np.int64 or y.shape != (x.shape[0],):
        return f"observed labels are {y.dtype} {y.shape} for {x.shape[0]} inputs"
    if GROUP_TEST in f:
        tx, ty = f[GROUP_TEST]["x"], f[GROUP_TEST]["y"]
        if tx.dtype != np.float32 or tx.shape[1:] != x.shape[1:] or ty.shape != (tx.shape[0],):
            return f"test shapes {tx.shape} / {ty.shape} for train inputs {x.shape}"
    if GROUP_EVAL in f and f[GROUP_EVAL]["y_train_true"].shape != (x.shape[0],):
        return "evaluation labels do not match the training rows"
    return None


def describe_masked_dataset(path: Path) -> dict[str, Any]:
    """A JSON-able summary of a masked-dataset file, read without loading the big arrays."""
    path = Path(path)
    with open_for_reading(path, KIND_MASKED_DATASET) as f:
        meta = MaskMetadata.from_json(get_json_attr(f, ATTR_METADATA))
        problem = _layout_problem(f)
        if problem:
            raise FileFormatError(f"{str(path)!r} is inconsistent ({problem}): recreate it with "
                                  "susl mask")
        x_shape = tuple(f[GROUP_TRAIN]["x"].shape)
        n_test = int(f[GROUP_TEST]["x"].shape[0]) if GROUP_TEST in f else None
        summary: dict[str, Any] = {
            "path": str(path),
            "kind": KIND_MASKED_DATASET,
            "format_version": int(f.attrs[ATTR_FORMAT_VERSION]),
            "susl_version": str(f.attrs[ATTR_SUSL_VERSION]),
            "input_kind": str(f.attrs[ATTR_INPUT_KIND]),
            "input_shape": list(x_shape[1:]),
            "class_names": [str(c) for c in get_json_attr(f, ATTR_CLASS_NAMES)],
            "n_train": int(x_shape[0]),
            "n_labelled": int(sum(meta.labelled_counts)),
            "n_unlabelled": int(x_shape[0] - sum(meta.labelled_counts)),
            "n_test": n_test,
            "has_evaluation_labels": GROUP_EVAL in f,
        }
    summary.update({k: list(v) if isinstance(v, tuple) else v for k, v in meta.to_json().items()})
    summary["sha256"] = file_sha256(path)
    return summary


def read_user_h5(path: Path, names: tuple[str, ...] = ("x", "y", "x_test", "y_test"),
                 required: tuple[str, ...] = ("x", "y")) -> dict[str, np.ndarray]:
    """Read the plain datasets `names` (those present; `required` must be) from a user's HDF5."""
    path = Path(path)
    check_regular_file(path, DataError, "data file")
    try:
        verify_file(path)  # a sealed susl file is checked before HDF5 parses it
        f = h5py.File(path, "r")
    except (FileFormatError, *H5_READ_ERRORS):
        raise DataError(f"{path} is not a readable HDF5 file (truncated or corrupt)") from None
    try:
        with f:
            refuse_indirection(f, str(path), DataError)
            return _read_user_datasets(path, f, names, required)
    except H5_READ_ERRORS as err:  # damaged metadata surfaces as any of these
        detail = " ".join(str(err).split())[:160]
        raise DataError(f"{path} is a damaged HDF5 file ({type(err).__name__}: {detail}): "
                        "recreate or re-export it") from None


def _read_user_datasets(path: Path, f: h5py.File, names: tuple[str, ...],
                        required: tuple[str, ...]) -> dict[str, np.ndarray]:
    kind = f.attrs.get(ATTR_KIND)
    kind = kind.decode("utf-8", "replace") if isinstance(kind, bytes) else kind
    if kind == KIND_MASKED_DATASET:
        raise DataError(
            f"{path} is already a susl masked dataset (made by `susl mask`): train on it "
            "directly, or give the original data file to make a new mask"
        )
    if kind is not None:
        raise DataError(f"{path} is a susl {kind} file, not a data file with x and y")
    missing = [k for k in required if k not in f]
    if missing:
        raise DataError(
            f"{path} lacks dataset(s) {', '.join(missing)} (found: "
            f"{', '.join(sorted(f.keys())) or 'nothing'}): store inputs as x and labels as y"
        )
    return {k: _read_h5_dataset(path, f, k) for k in names if k in f}


def _read_h5_dataset(path: Path, f: h5py.File, name: str) -> np.ndarray:
    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"{path}: {name!r} is a group, expected an array")
    try:
        check_declared_size(obj, f"{path}: {name!r}")
    except FileFormatError as err:
        raise DataError(str(err)) from None
    try:
        return np.asarray(obj[()])
    except H5_READ_ERRORS as err:
        detail = " ".join(str(err).split())[:160]
        raise DataError(f"{path}: cannot read {name!r} ({detail}): the file is corrupt") from None
