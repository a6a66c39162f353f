"""A scikit-learn style estimator over the CLI's engine: `SemiUnsupervised`.

    model = SemiUnsupervised(random_state=0).fit(X, y)   # y: -1 / None / NaN / "" = unlabelled
    model.predict(X)         # labelled class names, or "new-1", "new-2" ... for found classes
    model.predict_proba(X)   # (n, n_classes_) q(class|x), columns in the order of classes_
    model.novelty(X)         # (n,) q mass on the new classes: P(row is of no labelled class)
    model.save("run.h5"); SemiUnsupervised.load("run.h5")

`fit` does what `susl mask` (labels as given) followed by `susl train` does: the labels are
encoded as the CLI encodes a label column (every distinct value is a class, named by its text:
{0, 3, 7} gives classes "0", "3", "7"), sizes the user leaves unset come from the data-size
rules (susl_cli/sizing.py), and the extra components of the trained model are grouped into new
classes (susl_cli/discover.py). The result is an ordinary susl run: `save` writes the same
HDF5 checkpoint `susl train` writes, which `susl predict run.h5 new.csv` and `susl info run.h5`
read. The data given to `fit` is not saved with it, so the commands that need the training
data (`evaluate`, `discover`, `sample` with reference rows) say so and take `--data MASK.h5`.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from susl_cli.data.labels import encode_labels
from susl_cli.data.masking import SEED_MAX, make_as_given_dataset
from susl_cli.data.sources import Dataset
from susl_cli.discover import DiscoveryOptions
from susl_cli.discovery_runs import discovery_of
from susl_cli.errors import DataError, OutputError, UsageError
from susl_cli.inference import predict_probs
from susl_cli.predict import fit_layout
from susl_cli.runs import ModelOptions, Run, load_model, resolve_device, save_run
from susl_cli.storage.files import check_output_path
from susl_cli.storage.masked import write_masked_dataset
from susl_cli.train import SilentObserver, train_mask_file

__all__ = ["NotFittedError", "SemiUnsupervised"]

DATASET_NAME = "SemiUnsupervised.fit"  # the run's "dataset" in `susl info`
# Stored as the run's mask file: no such file exists, so a command that needs the training
# data says "the mask file '<...>' that 'run.h5' was trained on is not there: pass --data".
NO_MASK_FILE = "<data given to SemiUnsupervised.fit: no mask file>"
_RESERVED_NAME = re.compile(r"^new-\d+$")  # discovery names the classes it finds new-1, new-2 ..


class NotFittedError(UsageError, SklearnNotFittedError):
    """A method that needs a fitted model was called first: a susl usage error that
    scikit-learn's own checks (`except NotFittedError`) recognise too."""


class _EpochPrinter(SilentObserver):
    """verbose=True: one line per finished epoch on stderr."""

    def epoch_finished(self, record: dict[str, float]) -> None:
        loss = record.get("loss", float("nan"))
        print(f"epoch {int(record['epoch'])}: loss {loss:.4g}, labelled accuracy "
              f"{record.get('train_labelled_acc', float('nan')):.3f}", file=sys.stderr)


class SemiUnsupervised(ClassifierMixin, BaseEstimator):
    """Semi-unsupervised classifier: learns the labelled classes and finds unlabelled-only ones.

    A deep generative model (GM-DGM or a model of its family, as `susl train --model` offers)
    with one mixture component per labelled class plus extra components for classes nobody
    labelled; after training the extra components are grouped into new classes "new-1",
    "new-2", ... Parameters left as None take the CLI's defaults, chosen from the data size
    (README "Choices").

    Parameters: model ("gmdgm", "gmdgm-mf", "m2", "adgm", "agm-dgm"; None: chosen by data
    size as `susl train` does: gmdgm-mf below 10,000 unlabelled rows, else gmdgm);
    extra_components (components offered to unlabelled classes); new_classes (fix how many
    new classes discovery reports; None: estimate);
    latent_dim, hidden_units; likelihood ("gaussian", or "bernoulli" for values in [0, 1]);
    epochs, batch_size, learning_rate; label_evidence (weight of the known/new targets the
    labelled rows give each unlabelled row, README "Choices"; 0 = off); random_state (int seed
    for initialisation, batches and sampling; None draws one, kept in `random_state_`); device
    ("auto", "cpu", "cuda", ...); verbose (one line per epoch on stderr).

    Fitted attributes: classes_, n_features_in_, feature_names_in_ (DataFrame input only),
    n_components_, n_new_classes_, random_state_, history_ (per-epoch training log) and run_
    (the engine's run: model, configs, input transform).
    """

    def __init__(self, model: str | None = None, *, extra_components: int | None = None,
                 new_classes: int | None = None, latent_dim: int | None = None,
                 hidden_units: int | None = None, likelihood: str | None = None,
                 epochs: int | None = None, batch_size: int | None = None,
                 learning_rate: float | None = None, label_evidence: float | None = None,
                 random_state: int | None = 0, device: str = "auto",
                 verbose: bool = False) -> None:
        self.model = model
        self.extra_components = extra_components
        self.new_classes = new_classes
        self.latent_dim = latent_dim
        self.hidden_units = hidden_units
        self.likelihood = likelihood
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.label_evidence = label_evidence
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # --- fitting ---------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> SemiUnsupervised:
        """Train on all rows of X; y marks unlabelled rows with -1, None, NaN or "".

        y=None (or every row unlabelled) clusters X: every class found is a new one.
        """
        seed = _seed(self.random_state)  # the settings first: a typo fails before any work
        options, overrides = self._model_options(), self._train_overrides(seed)
        x, names = _as_matrix(X, "X")
        codes, classes = _encode_y(y, len(x))
        dataset = Dataset(DATASET_NAME, x, codes, None, None, classes, "real",
                          hashlib.sha256(x.tobytes()).hexdigest())
        masked = make_as_given_dataset(dataset, seed=seed)
        observer = _EpochPrinter() if self.verbose else None
        with tempfile.TemporaryDirectory(prefix="susl-api-") as folder:
            # The engine trains from a mask file into a checkpoint file (issue 16 part 3 makes
            # the checkpoint optional): both live here only while training runs.
            mask, out = Path(folder) / "data.h5", Path(folder) / "run.h5"
            write_masked_dataset(mask, masked)
            train_mask_file(mask, out, options=options, train_overrides=overrides,
                            device=self.device, observer=observer,
                            discovery=DiscoveryOptions(n_new=self.new_classes))
            run = load_model(out, resolve_device(self.device))
        run.meta.mask_file = NO_MASK_FILE
        self._set_fitted(run, out)
        self.random_state_ = seed
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):  # sklearn: only set for named columns
            del self.feature_names_in_
        return self

    def _model_options(self) -> ModelOptions:
        for name in ("extra_components", "new_classes"):
            _check_int(self, name, minimum=0)
        for name in ("latent_dim", "hidden_units"):
            _check_int(self, name, minimum=1)
        settings = {"latent_dim": self.latent_dim, "hidden_units": self.hidden_units}
        return ModelOptions(model=self.model, extra_components=self.extra_components,
                            likelihood=self.likelihood,
                            settings={k: v for k, v in settings.items() if v is not None})

    def _train_overrides(self, seed: int) -> dict[str, object]:
        """The TrainConfig fields set here; the data-size rules fill the rest."""
        for name in ("epochs", "batch_size"):
            _check_int(self, name, minimum=1)
        rate = self.learning_rate
        if rate is not None and not (isinstance(rate, int | float) and 0 < rate < float("inf")):
            raise UsageError(f"learning_rate must be a number > 0, got {rate!r}")
        weight = self.label_evidence
        if weight is not None and not (isinstance(weight, int | float)
                                       and 0 <= weight < float("inf")):
            raise UsageError(f"label_evidence must be a number >= 0, got {weight!r}")
        chosen = {"epochs": self.epochs, "batch_size": self.batch_size,
                  "learning_rate": None if rate is None else float(rate),
                  "label_evidence": None if weight is None else float(weight)}
        return {"seed": seed, **{k: v for k, v in chosen.items() if v is not None}}

    def _set_fitted(self, run: Run, checkpoint: Path) -> None:
        discovery, _ = discovery_of(run, checkpoint)
        self.run_ = run
        self.discovery_ = discovery
        self.classes_ = np.asarray(discovery.class_names, dtype=object)
        self.n_features_in_ = int(np.prod(run.transform.input_shape))
        self.n_components_ = run.model_config.n_components
        self.n_new_classes_ = discovery.n_new
        self.history_ = {k: list(v) for k, v in run.history.items()}

    # --- using a fitted model --------------------------------------------------------------

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, n_classes_) q(class|x): q(y|x) summed over each class's components."""
        probs = self._component_probs(X)  # first: it says when the model is not fitted
        return self.discovery_.class_probs(probs)

    def predict(self, X: Any) -> np.ndarray:
        """(n,) the most probable class of each row: a labelled class name or new-1 ..."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(-1)]

    def novelty(self, X: Any) -> np.ndarray:
        """(n,) the q(y|x) mass on new classes: how likely a row is of no labelled class."""
        probs = self._component_probs(X)
        return self.discovery_.novelty(probs)

    def predict_components(self, X: Any) -> np.ndarray:
        """(n, n_components_) q(y|x) over the model's mixture components (the raw posterior)."""
        return self._component_probs(X)

    def _component_probs(self, X: Any) -> np.ndarray:
        run = self._fitted()
        x, names = _as_matrix(X, "X", flat=False)
        expected = getattr(self, "feature_names_in_", None)
        if names is not None and expected is not None and list(names) != list(expected):
            raise DataError("X has other columns than the data the model was fitted on: give "
                            "the same columns in the same order")
        shape = run.transform.input_shape
        if tuple(x.shape[1:]) not in (shape, (self.n_features_in_,)):
            got = int(np.prod(x.shape[1:]))
            raise DataError(f"X has {got} features, but the model was fitted on "
                            f"{self.n_features_in_}: give rows laid out like the training data")
        return predict_probs(run, fit_layout(run, x, "X"))

    def _fitted(self) -> Run:
        if not hasattr(self, "run_"):
            raise NotFittedError("this SemiUnsupervised model is not fitted yet: call fit(X, y) "
                                 "or SemiUnsupervised.load(path) first")
        return self.run_

    # --- checkpoints -----------------------------------------------------------------------

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model as a susl checkpoint (HDF5, the file `susl train` writes)."""
        run, path = self._fitted(), Path(path)
        if path.exists() and not overwrite:
            raise OutputError(f"{str(path)!r} already exists: pass overwrite=True to replace it")
        check_output_path(path, overwrite=True, claim=False)  # folder, links, permissions
        save_run(run, path, completed=run.meta.completed is not False)
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> SemiUnsupervised:
        """A fitted model from a checkpoint written by `save` or by `susl train`."""
        run = load_model(Path(path), resolve_device(device))
        mc, tc = run.model_config, run.train_config
        model = cls(mc.model, extra_components=mc.n_components - mc.n_labelled,
                    latent_dim=mc.latent_dim, hidden_units=mc.hidden_units,
                    likelihood=mc.likelihood, epochs=tc.epochs, batch_size=tc.batch_size,
                    learning_rate=tc.learning_rate,
                    label_evidence=run.model.objective.label_evidence, random_state=tc.seed,
                    device=device)
        model._set_fitted(run, Path(path))
        model.random_state_ = tc.seed
        return model


def _as_matrix(X: Any, where: str, flat: bool = True) -> tuple[np.ndarray, list[str] | None]:
    """X as float32 rows (2-D unless `flat` is False), and its column names if it has any."""
    names = None
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # a pandas DataFrame
        names = [str(c) for c in X.columns]
        X = X.to_numpy()
    if hasattr(X, "toarray") and not isinstance(X, np.ndarray):
        raise DataError(f"{where} is a sparse matrix: pass {where}.toarray()")
    try:
        x = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{where} must hold numbers only (numpy array or DataFrame of numeric "
                        "columns): encode text columns first") from None
    if x.ndim < 2 or (flat and x.ndim != 2):
        raise DataError(f"{where} has shape {x.shape}: give a 2-D array (n_samples, "
                        "n_features); reshape single rows with X.reshape(1, -1)")
    if len(x) == 0 or x[0].size == 0:
        raise DataError(f"{where} has shape {x.shape}: it needs at least one row and column")
    if not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise DataError(f"{where} holds NaN or infinite values (first in row {row}): impute "
                        "or drop them")
    return x, names


def _encode_y(y: Any, n_rows: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class ids (-1 = unlabelled) and class names, as `susl mask` encodes a label column."""
    if y is None:
        return np.full(n_rows, -1, dtype=np.int64), ()
    labels = y.to_numpy() if hasattr(y, "to_numpy") else np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == 1:  # a one-column frame or (n, 1) array
        labels = labels[:, 0]
    if labels.ndim == 1 and len(labels) != n_rows:
        raise DataError(f"y has {len(labels)} labels for {n_rows} rows of X: give one label "
                        "per row (-1, None, NaN or '' for unlabelled rows)")
    (codes,), names = encode_labels([labels], "y")
    reserved = [n for n in names if _RESERVED_NAME.match(n)]
    if reserved:
        raise DataError(f"y: the class name {reserved[0]!r} is kept for the classes susl "
                        "discovers: rename that class")
    return codes, names


def _seed(random_state: Any) -> int:
    """An int seed; None draws one (from the operating system's entropy)."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy % (SEED_MAX + 1))
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer) \
            or not 0 <= random_state <= SEED_MAX:
        raise UsageError(f"random_state must be an integer in 0..{SEED_MAX} or None, got "
                         f"{random_state!r}")
    return int(random_state)


def _check_int(model: SemiUnsupervised, name: str, minimum: int) -> None:
    value = getattr(model, name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer)
                              or value < minimum):
        raise UsageError(f"{name} must be an integer >= {minimum} or None, got {value!r}")
