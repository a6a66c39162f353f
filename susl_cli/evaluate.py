"""Scoring a trained model: predict with q(y|x) and compute every metric.

The paper's protocol (majority mapping) plus Hungarian, known/novel accuracy, NMI and ARI.

The mapping from components to classes is fitted either on the scored (test) points, the
paper's protocol, or on the training points with their evaluation-only true labels, so that
the test set is only scored. The output always says which.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from susl_cli.discover import Discovery
from susl_cli.discovery_runs import discovery_of
from susl_cli.errors import DataError, UsageError
from susl_cli.inference import (  # noqa: F401  predict_probs, embed_points: importable here too
    embed_points,
    predict_probs,
)
from susl_cli.metrics import Metrics, discovery_scores, entropy, evaluate_assignments
from susl_cli.runs import Run, load_model, resolve_device, run_mask_file
from susl_cli.storage.masked import MaskedDataset, read_masked_dataset

FIT_CHOICES = ("test", "train")


@dataclass
class Evaluation:
    """Metrics of one checkpoint on one dataset, plus what the figures need."""

    checkpoint: str
    data_file: str
    run: Run
    metrics: Metrics
    probs: np.ndarray  # (N, K) q(y|x) on the scored points
    y_true: np.ndarray  # (N,) true classes of the scored points
    x: np.ndarray  # (N, *input_shape) the scored points, raw (for figures)
    data_sha256: str = ""  # of the mask file scored (the run's own unless --data named another)
    discovery: Discovery | None = None  # the classes the run names (labelled + new-1 ..)
    discovery_source: str = ""
    n_unscored: int = 0  # test rows without a true label (a user's file): not scored

    @property
    def class_names(self) -> list[str]:
        return list(self.run.meta.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "data": self.data_file,
                "model": self.run.model_config.model, "epochs": self.run.epoch,
                "mask_sha256": self.run.meta.mask_sha256, "data_sha256": self.data_sha256,
                "seed": self.run.meta.seed,
                "metrics": self.metrics.to_dict(), "n_unscored": self.n_unscored,
                "discovery": None if self.discovery is None else self.discovery.to_json(),
                "discovery_source": self.discovery_source}


def resolve_data_file(run: Run, checkpoint: Path, data: Path | None) -> Path:
    """The mask file to score on: `data`, else the one the run was trained on (unchanged)."""
    return run_mask_file(run, checkpoint, data)[0]


def evaluate_checkpoint(checkpoint: Path, data: Path | None = None, fit_mapping: str = "test",
                        device: str = "cpu") -> Evaluation:
    """Score a checkpoint on the test set of its mask file (or of `data`)."""
    if fit_mapping not in FIT_CHOICES:
        raise UsageError(f"--fit-mapping must be test or train, got {fit_mapping!r}")
    run = load_model(Path(checkpoint), resolve_device(device))
    data_file, data_sha = run_mask_file(run, Path(checkpoint), data)
    masked = read_masked_dataset(data_file, with_true_labels=fit_mapping == "train")
    _check_compatible(run, masked, data_file)
    if masked.x_test is None or masked.y_test is None or len(masked.y_test) == 0:
        raise DataError(f"{str(data_file)!r} has no test set to score: make the mask with "
                        "--test-fraction 0.2 (or from data with x_test, y_test)")
    known_truth = masked.y_test >= 0
    if not known_truth.any():
        raise DataError(f"none of the {len(masked.y_test)} test rows of {str(data_file)!r} has "
                        "a label, so there is nothing to score against: `susl predict` names "
                        "them; label some test rows to score")
    x_test, y_test = masked.x_test[known_truth], masked.y_test[known_truth]
    probs = predict_probs(run, x_test)
    fit_components = fit_true = None
    if fit_mapping == "train":
        if masked.y_train_true is None:
            raise DataError(f"{str(data_file)!r} holds no true training labels: use "
                            "--fit-mapping test")
        fit_components = predict_probs(run, masked.x_train).argmax(-1)
        fit_true = masked.y_train_true
    n_classes = len(run.meta.class_names)
    metrics = evaluate_assignments(
        probs.argmax(-1), y_test, n_components=run.model_config.n_components,
        n_classes=n_classes, labelled_classes=run.meta.labelled_classes,
        fit_components=fit_components, fit_true=fit_true)
    discovery, source = discovery_of(run, Path(checkpoint))
    metrics = dataclasses.replace(metrics, **discovery_scores(
        discovery.classify(probs), y_test, n_predicted=len(discovery.class_names),
        n_classes=n_classes, labelled_classes=run.meta.labelled_classes,
        novelty=discovery.novelty(probs), entropies=entropy(probs),
        n_new_found=discovery.n_new))
    return Evaluation(str(checkpoint), str(data_file), run, metrics, probs, y_test, x_test,
                      data_sha, discovery, source, int((~known_truth).sum()))


def _check_compatible(run: Run, masked: MaskedDataset, path: Path) -> None:
    shape = tuple(masked.x_train.shape[1:])
    if shape != run.transform.input_shape:
        raise DataError(f"{str(path)!r} holds inputs of shape {shape}, the model was trained on "
                        f"{run.transform.input_shape}: score it on data of the same layout")
    if len(masked.class_names) != len(run.meta.class_names):
        raise DataError(f"{str(path)!r} has {len(masked.class_names)} classes, the model's data "
                        f"had {len(run.meta.class_names)}: use a mask of the same dataset")
