"""Classifying new data with a trained model's amortised classifier q(y|x).

For every input row: the most probable component c = argmax_y q(y|x), its probability
q(c|x), the entropy H[q(y|x)] (nats), the class the row is given (a labelled class name, or
new-1 .. new-k for the classes discovery found: susl_cli/discover.py), that class's probability
(q summed over its components), the novelty score (q mass on components of new classes: the
probability that the row belongs to none of the labelled classes), and a flag for rows unlike
any labelled class. No true label of any point is read: the names come from the labelled
components (tied to their classes in training) and from the run's stored discovery.

The flag: H[q(y|x)] above a threshold calibrated on the entropies of the labelled training
points of the run's mask file (their `entropy_quantile`, default 0.95). A classifier is
confident on the classes it was taught and hesitant on classes it never saw (paper Fig 2).
The labelled points were fitted with the supervised term, so the threshold is on the low
side: the flag errs towards raising too many rows rather than too few.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from susl_cli.data.sources import USER_SUFFIXES, load_dataset
from susl_cli.data.user_files import read_user_inputs
from susl_cli.discover import Discovery
from susl_cli.discovery_runs import discovery_of, stored_discovery
from susl_cli.errors import DataError, FileFormatError, OutputError, UsageError
from susl_cli.evaluate import predict_probs
from susl_cli.metrics import entropy
from susl_cli.runs import Run, check_run_mask, load_model, resolve_device
from susl_cli.storage.h5 import KIND_MASKED_DATASET, check_output_path, peek_kind
from susl_cli.storage.masked import read_masked_dataset
from susl_cli.storage.outputs import write_csv_atomic

DEFAULT_ENTROPY_QUANTILE = 0.95
SPLITS = ("auto", "train", "test")
COLUMNS = ("row", "component", "probability", "entropy", "class", "class_probability",
           "novelty", "unlike_labelled")


@dataclass(frozen=True)
class PredictOptions:
    """How to read the input and calibrate the flag; validated on creation."""

    split: str = "auto"  # auto: a mask file's or dataset's test set, a user file's x
    entropy_quantile: float = DEFAULT_ENTROPY_QUANTILE
    mask: Path | None = None  # the run's mask file, if it moved since training
    data_dir: Path | None = None  # for built-in dataset names
    label_column: str = "label"  # CSV input: this column is dropped when present
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise UsageError(f"--split must be auto, train or test, got {self.split!r}")
        q = self.entropy_quantile
        if not (math.isfinite(q) and 0.0 < q <= 1.0):
            raise UsageError(f"--entropy-quantile must be in (0, 1], got {q}")


@dataclass(frozen=True)
class Calibration:
    """What the run's mask file tells about the components, and how it was worked out."""

    discovery: Discovery  # component -> labelled class or discovered new class
    mapping_source: str
    entropy_threshold: float | None  # None: nothing to calibrate on, no row is flagged
    threshold_source: str


@dataclass
class Predictions:
    """One prediction per input row, plus where the mapping and the threshold came from."""

    checkpoint: str
    input: str  # what was read, e.g. "the test set of mask.h5"
    probs: np.ndarray  # (N, K) q(y|x)
    calibration: Calibration
    entropy_quantile: float

    @property
    def components(self) -> np.ndarray:
        return self.probs.argmax(-1)

    @property
    def entropy(self) -> np.ndarray:
        return entropy(self.probs)

    @property
    def class_names(self) -> list[str]:
        return list(self.calibration.discovery.class_names)

    @property
    def mapped_names(self) -> np.ndarray:
        """(N,) the class each row is given: a labelled class name or new-1 .. new-k."""
        names = np.asarray(self.class_names, dtype=object)
        return names[self.calibration.discovery.classify(self.probs)]

    @property
    def unlike_labelled(self) -> np.ndarray | None:
        threshold = self.calibration.entropy_threshold
        return None if threshold is None else self.entropy > threshold

    def frame(self) -> pd.DataFrame:
        """The output table; `unlike_labelled` is empty when there was nothing to calibrate."""
        flag = self.unlike_labelled
        discovery = self.calibration.discovery
        return pd.DataFrame({
            "row": np.arange(len(self.probs)), "component": self.components,
            "probability": self.probs.max(-1), "entropy": self.entropy,
            "class": self.mapped_names,
            "class_probability": discovery.class_probs(self.probs).max(-1),
            "novelty": discovery.novelty(self.probs),
            "unlike_labelled": pd.array(flag if flag is not None else [None] * len(self.entropy),
                                        dtype="boolean"),
        }, columns=list(COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        flag = self.unlike_labelled
        names, counts = np.unique(self.mapped_names.astype(str), return_counts=True)
        return {"checkpoint": self.checkpoint, "input": self.input,
                "n_rows": int(len(self.probs)),
                "n_new_classes": self.calibration.discovery.n_new,
                "mapping_source": self.calibration.mapping_source,
                "entropy_quantile": self.entropy_quantile,
                "entropy_threshold": self.calibration.entropy_threshold,
                "threshold_source": self.calibration.threshold_source,
                "n_unlike_labelled": None if flag is None else int(flag.sum()),
                "rows_per_class": {str(n): int(c) for n, c in zip(names, counts, strict=True)}}


def read_inputs(source: str, options: PredictOptions) -> tuple[np.ndarray, str]:
    """Raw input rows and a description of what was read (labels are never returned).

    A susl mask file gives its test set (`--split train`: its training inputs); a user file
    gives its `x` (`--split test`: its `x_test`); a built-in dataset name gives its test set.
    """
    path = Path(source).expanduser()
    kind = _susl_kind(path)
    if kind == KIND_MASKED_DATASET:
        masked = read_masked_dataset(path)
        test = options.split in ("auto", "test")
        return _pick(masked.x_train, masked.x_test, test, str(path))
    if kind is not None:
        raise DataError(f"{str(path)!r} is a susl {kind} file, not data: give a .npz, .csv or "
                        ".h5 data file, a mask file or a dataset name")
    if path.suffix.lower() in USER_SUFFIXES or path.exists():
        x, x_test = read_user_inputs(path, options.label_column)
        return _pick(x, x_test, options.split == "test", str(path))
    data = load_dataset(source, data_dir=options.data_dir)
    return _pick(data.x_train, data.x_test, options.split in ("auto", "test"), source)


def _susl_kind(path: Path) -> str | None:
    """The susl kind of an HDF5 file, or None for anything else (a user's own data)."""
    if path.suffix.lower() not in (".h5", ".hdf5") or not path.is_file():
        return None
    try:
        return peek_kind(path)
    except FileFormatError:
        return None  # a plain or damaged HDF5 file: the user-file reader says what is wrong


def _pick(x_train: np.ndarray, x_test: np.ndarray | None, test: bool,
          name: str) -> tuple[np.ndarray, str]:
    if not test:
        return x_train, f"{len(x_train)} rows of {name}"
    if x_test is None or len(x_test) == 0:
        raise DataError(f"{name!r} has no test set: pass --split train to predict its other "
                        "rows")
    return x_test, f"{len(x_test)} test rows of {name}"


def fit_layout(run: Run, x: np.ndarray, where: str) -> np.ndarray:
    """Rows laid out as the model's input_shape; flat rows of the right size are reshaped.

    A Bernoulli (image) model also needs values in [0, 1]: raw 0..255 pixels would give
    confident nonsense rather than an error.
    """
    shape = run.transform.input_shape
    size = int(np.prod(shape))
    if tuple(x.shape[1:]) != shape:
        if x.ndim != 2 or x.shape[1] != size:
            raise DataError(f"{where}: rows have shape {tuple(x.shape[1:])}, the model was "
                            f"trained on {shape} ({size} values per row): give data laid out "
                            "like the training data")
        x = x.reshape(len(x), *shape)
    if run.model_config.likelihood == "bernoulli" and (x.min() < 0 or x.max() > 1):
        raise DataError(f"{where}: values span {x.min():g}..{x.max():g}, the model was trained "
                        "on values in [0, 1]: scale the data the same way (e.g. divide by 255)")
    return x


def calibrate(run: Run, checkpoint: Path, mask: Path | None, quantile: float) -> Calibration:
    """Class names (the run's discovery) and the entropy threshold (its mask file's labelled
    training points). No true label is read."""
    path = Path(mask) if mask is not None else Path(run.meta.mask_file)
    stored = stored_discovery(run)
    if not path.exists():
        if mask is not None:
            raise DataError(f"mask file {str(path)!r} does not exist: check the --mask path")
        if stored is None:
            raise DataError(f"{str(checkpoint)!r} has no discovered classes stored and its "
                            f"mask file {str(path)!r} is gone: pass --mask with it")
        return Calibration(stored, f"discovery stored in {Path(checkpoint).name}", None,
                           "none: the run's mask file is gone (pass --mask)")
    check_run_mask(run, Path(checkpoint), path, option="--mask")
    masked = read_masked_dataset(path)
    discovery, source = discovery_of(run, checkpoint, path)
    labelled = masked.y_observed >= 0
    if not labelled.any():
        return Calibration(discovery, source, None, f"none: {path.name} has no labelled points")
    probs = predict_probs(run, masked.x_train[labelled])
    threshold = float(np.quantile(entropy(probs), quantile))
    return Calibration(discovery, source, threshold,
                       f"{quantile:g} quantile of the entropy of the {int(labelled.sum())} "
                       f"labelled training points of {path.name}")


def predict_file(checkpoint: Path, source: str, options: PredictOptions) -> Predictions:
    """Load a checkpoint, read `source`, and classify every row."""
    run = load_model(Path(checkpoint), resolve_device(options.device))
    x, described = read_inputs(source, options)
    x = fit_layout(run, x, described)
    calibration = calibrate(run, Path(checkpoint), options.mask, options.entropy_quantile)
    probs = predict_probs(run, x)  # (N, K)
    return Predictions(str(checkpoint), described, probs, calibration, options.entropy_quantile)


def check_predictions_path(out: Path, overwrite: bool,
                           inputs: tuple[Path | None, ...] = ()) -> None:
    """Predictions are a CSV table; refuse anything else before any work is done."""
    if Path(out).suffix.lower() != ".csv":
        raise OutputError(f"predictions are written as CSV: give --out a .csv path, not "
                          f"{str(out)!r}")
    check_output_path(Path(out), overwrite, inputs)


def write_predictions(predictions: Predictions, out: Path, overwrite: bool) -> Path:
    return write_csv_atomic(Path(out), predictions.frame(), overwrite)


def predict_to_file(checkpoint: Path, source: str, out: Path, options: PredictOptions,
                    overwrite: bool = False) -> Predictions:
    """Check `out` first (nothing is computed for an unwritable path), predict, write CSV."""
    check_predictions_path(out, overwrite, inputs=(Path(checkpoint), Path(source)))
    predictions = predict_file(checkpoint, source, options)
    write_predictions(predictions, out, overwrite)
    return predictions
