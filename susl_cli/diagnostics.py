"""Label-free per-epoch diagnostics of a run's classifier q(y|x), logged in its history.

Only the observed labels of the labelled training points are used (never test labels, nor the
evaluation-only true labels of training points).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch

from susl_cli.models import SuslModel


@torch.no_grad()
def labelled_accuracy(model: SuslModel, x_labelled: torch.Tensor, y_labelled: torch.Tensor,
                      batch: int = 10_000) -> float:
    """Accuracy of q(y|x) on the labelled training points (the only labels training sees)."""
    if len(x_labelled) == 0:
        return float("nan")
    model.eval()
    correct = torch.zeros((), device=x_labelled.device)
    for start in range(0, len(x_labelled), batch):
        logits = model.classifier_logits(x_labelled[start:start + batch])
        correct += (logits.argmax(-1) == y_labelled[start:start + batch]).sum()
    return float(correct) / len(x_labelled)


class ChunkedRows(Protocol):
    """Rows read a chunk at a time (training_data.StreamedRows: a streamed run's rows)."""

    def chunks(self, size: int) -> Iterator[torch.Tensor]: ...
    def summed(self, tally: torch.Tensor) -> torch.Tensor: ...


@torch.no_grad()
def assignment_counts(model: SuslModel, x_labelled: torch.Tensor,
                      x_unlabelled: torch.Tensor | ChunkedRows,
                      batch: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, unlabelled): how many training points argmax q(y|x) puts in each component.

    One pass over the training points per epoch serves both label-free diagnostics below.
    Streamed rows are read a chunk at a time (under DDP each process counts its share and
    the counts are added up), never loaded whole.
    """
    model.eval()
    counts = []
    for x in (x_labelled, x_unlabelled):
        tally = torch.zeros(model.config.n_components, dtype=torch.long,
                            device=model.log_prior.device)
        parts = ((x[s:s + batch] for s in range(0, len(x), batch))
                 if isinstance(x, torch.Tensor) else x.chunks(batch))
        for part in parts:
            predicted = model.classifier_logits(part).argmax(-1)
            tally += torch.bincount(predicted, minlength=len(tally))
        if not isinstance(x, torch.Tensor):
            tally = x.summed(tally)
        counts.append(tally.cpu().numpy())
    return counts[0], counts[1]


def components_used(labelled: np.ndarray, unlabelled: np.ndarray) -> int:
    """How many components q(y|x) predicts for some unlabelled training point (label-free).

    Far fewer than the labelled classes plus the hidden ones means components are starved
    (README "Choices": --marginal-kl); with no unlabelled points, counted on the labelled ones.
    """
    counts = unlabelled if unlabelled.sum() else labelled
    return int(np.count_nonzero(counts))


def largest_labelled_share_ratio(labelled: np.ndarray, unlabelled: np.ndarray,
                                 prior: Sequence[float], n_labelled: int) -> float:
    """max over labelled components c of (share of training points q(y|x) puts in c) / p(y=c).

    Label-free. p(y=c) is estimated from the mask as the share of class c in the data, so a
    healthy run sits near 1 (1.04-1.06 measured on MNIST SUS); well above 1, a labelled
    component is absorbing a hidden class that looks like it (MNIST SUS seed 3 after 50
    epochs: 1.47, 9s merged into the labelled 4s). NaN when no class is labelled.
    """
    if n_labelled == 0:
        return math.nan
    counts = (labelled + unlabelled).astype(np.float64)
    share = counts[:n_labelled] / max(counts.sum(), 1.0)
    return float(np.max(share / np.asarray(prior[:n_labelled], dtype=np.float64)))
