"""Classifying new data with a trained model's amortised classifier q(y|x).

For every input row: the most probable component c = argmax_y q(y|x), its probability
q(c|x), the entropy H[q(y|x)] (nats), the class that component stands for, and a flag for
rows unlike any labelled class.

Where the component -> class mapping comes from (test labels are never read):
- component j < n_labelled *is* the j-th labelled class: the model was trained that way;
- every extra component takes the most common true class among the run's *training* points
  it is assigned (majority mapping on the mask file's evaluation-only labels); with no such
  labels, or no training point assigned to it, it stays "unmapped".

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
from susl_cli.errors import DataError, FileFormatError, OutputError, UsageError
from susl_cli.evaluate import predict_probs
from susl_cli.metrics import classifier_mapping, entropy, majority_mapping
from susl_cli.runs import Run, check_run_mask, load_model, resolve_device
from susl_cli.storage.h5 import KIND_MASKED_DATASET, check_output_path, peek_kind
from susl_cli.storage.masked import read_masked_dataset
from susl_cli.storage.outputs import write_csv_atomic

DEFAULT_ENTROPY_QUANTILE = 0.95
SPLITS = ("auto", "train", "test")
UNMAPPED_NAME = "unmapped"
COLUMNS = ("row", "component", "probability", "entropy", "mapped_class", "unlike_labelled")


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

    mapping: np.ndarray  # (K,) class id per component, -1 = unmapped
    mapping_source: str
    entropy_threshold: float | None  # None: nothing to calibrate on, no row is flagged
    threshold_source: str


@dataclass
class Predictions:
    """One prediction per input row, plus where the mapping and the threshold came from."""

    checkpoint: str
    input: str  # what was read, e.g. "the test set of mask.h5"
    components: np.ndarray  # (N,) argmax q(y|x)
    probability: np.ndarray  # (N,) max q(y|x)
    entropy: np.ndarray  # (N,) H[q(y|x)] in nats
    class_names: list[str]
    calibration: Calibration
    entropy_quantile: float

    @property
    def mapped_names(self) -> np.ndarray:
        names = np.asarray([*self.class_names, UNMAPPED_NAME], dtype=object)
        return names[self.calibration.mapping[self.components]]  # -1 picks "unmapped"

    @property
    def unlike_labelled(self) -> np.ndarray | None:
        threshold = self.calibration.entropy_threshold
        return None if threshold is None else self.entropy > threshold

    def frame(self) -> pd.DataFrame:
        """The output table; `unlike_labelled` is empty when there was nothing to calibrate."""
        flag = self.unlike_labelled
        return pd.DataFrame({
            "row": np.arange(len(self.components)), "component": self.components,
            "probability": self.probability, "entropy": self.entropy,
            "mapped_class": self.mapped_names,
            "unlike_labelled": pd.array(flag if flag is not None else [None] * len(self.entropy),
                                        dtype="boolean"),
        }, columns=list(COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        flag = self.unlike_labelled
        names, counts = np.unique(self.mapped_names.astype(str), return_counts=True)
        return {"checkpoint": self.checkpoint, "input": self.input,
                "n_rows": int(len(self.components)),
                "mapping_source": self.calibration.mapping_source,
                "entropy_quantile": self.entropy_quantile,
                "entropy_threshold": self.calibration.entropy_threshold,
                "threshold_source": self.calibration.threshold_source,
                "n_unlike_labelled": None if flag is None else int(flag.sum()),
                "rows_per_class": {str(n): int(c) for n, c in zip(names, counts, strict=True)}}


def component_mapping(run: Run, fit_components: np.ndarray | None = None,
                      fit_true: np.ndarray | None = None) -> np.ndarray:
    """(K,) class per component: labelled components by construction, extra ones by majority.

    The majority vote over (fit_components, fit_true) only names the extra components; the
    labelled ones are never relabelled, whatever the points say.
    """
    k = run.model_config.n_components
    labelled = list(run.meta["labelled_classes"])
    mapping = classifier_mapping(labelled, k)
    if fit_components is not None and fit_true is not None:
        majority = majority_mapping(fit_components, fit_true, k, len(run.meta["class_names"]))
        mapping[len(labelled):] = majority[len(labelled):]
    return mapping


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


def calibrate(run: Run, mask: Path | None, quantile: float,
              checkpoint: Path | str = "this run") -> Calibration:
    """Component mapping and entropy threshold from the run's mask file (training part only)."""
    path = Path(mask) if mask is not None else Path(run.meta["mask_file"])
    if not path.exists():
        if mask is not None:
            raise DataError(f"mask file {str(path)!r} does not exist: check the --mask path")
        return Calibration(component_mapping(run),
                           f"labelled components only: the run's mask file {str(path)!r} is "
                           "gone (pass --mask to name extra components)", None,
                           "none: the run's mask file is gone (pass --mask)")
    check_run_mask(run, Path(checkpoint), path, option="--mask")
    masked = read_masked_dataset(path, with_true_labels=True)
    probs = predict_probs(run, masked.x_train)  # (N, K)
    if masked.y_train_true is None:
        mapping = component_mapping(run)
        source = f"labelled components only ({path.name} holds no true training labels)"
    else:
        mapping = component_mapping(run, probs.argmax(-1), masked.y_train_true)
        source = ("labelled components by construction; extra components by majority vote "
                  f"of the true labels of the training points of {path.name}")
    labelled = masked.y_observed >= 0
    if not labelled.any():
        return Calibration(mapping, source, None, f"none: {path.name} has no labelled points")
    threshold = float(np.quantile(entropy(probs[labelled]), quantile))
    return Calibration(mapping, source, threshold,
                       f"{quantile:g} quantile of the entropy of the {int(labelled.sum())} "
                       f"labelled training points of {path.name}")


def predict_file(checkpoint: Path, source: str, options: PredictOptions) -> Predictions:
    """Load a checkpoint, read `source`, and classify every row."""
    run = load_model(Path(checkpoint), resolve_device(options.device))
    x, described = read_inputs(source, options)
    x = fit_layout(run, x, described)
    calibration = calibrate(run, options.mask, options.entropy_quantile, checkpoint)
    probs = predict_probs(run, x)  # (N, K)
    return Predictions(str(checkpoint), described, probs.argmax(-1), probs.max(-1),
                       entropy(probs), list(run.meta["class_names"]), calibration,
                       options.entropy_quantile)


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
