"""The training data as model-ready tensors, and the per-epoch batches drawn from it.

Under DDP (susl_cli/distributed.py) every process draws the same global batches and
binarises them with the same draws; `shard_batch` then keeps its own rows.

Protocol: each step takes one unlabelled batch and one labelled batch (the small labelled set
is cycled); one epoch is one pass over the unlabelled points. Image batches are re-binarised
every step (x ~ Bernoulli(grey level)). Only observed labels are read here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from susl_cli.models import Batch
from susl_cli.models.shard import RowSpan, Shard, rows_of
from susl_cli.run_meta import component_of_class
from susl_cli.runs import Run
from susl_cli.share_guard import unlabelled_targets


@dataclass
class TrainingData:
    """Model-ready tensors on the training device (labels as component indices)."""

    x_labelled: torch.Tensor  # (N_l, D)
    y_labelled: torch.Tensor  # (N_l,) component index
    x_unlabelled: torch.Tensor  # (N_u, D)
    binarise: bool
    share_targets: torch.Tensor | None = None  # (n_labelled,) p_u(c), for the merge guard


def prepare_data(run: Run, x_train: np.ndarray, y_observed: np.ndarray,
                 device: torch.device) -> TrainingData:
    """Apply the run's transform and split by the observed labels (-1 = unlabelled)."""
    x = torch.from_numpy(run.transform.apply(x_train)).to(device)
    labelled = np.flatnonzero(y_observed >= 0)
    unlabelled = np.flatnonzero(y_observed < 0)
    class_to_component = component_of_class(run.meta.labelled_classes)
    y = np.asarray([class_to_component[int(c)] for c in y_observed[labelled]], dtype=np.int64)
    mc = run.model_config
    targets = None
    if 0 < mc.n_labelled < mc.n_components and len(unlabelled):
        counts = np.bincount(y, minlength=mc.n_labelled)
        targets = torch.tensor(unlabelled_targets(mc.prior, counts, len(unlabelled)),
                               dtype=x.dtype, device=device)
    return TrainingData(x[torch.from_numpy(labelled).to(device)], torch.from_numpy(y).to(device),
                        x[torch.from_numpy(unlabelled).to(device)],
                        mc.likelihood == "bernoulli", targets)


def batch_indices(data: TrainingData, batch_u: int, batch_l: int,
                   generator: torch.Generator, device: torch.device) -> tuple[list, list]:
    """Unlabelled batches covering every point once; labelled batches cycled alongside.

    With no unlabelled data (fully labelled) an epoch is one pass over the labelled points.
    """
    n_u, n_l = len(data.x_unlabelled), len(data.x_labelled)
    if n_u == 0:
        perm = torch.randperm(n_l, generator=generator, device=device)
        labelled = list(perm.split(batch_l))
        return [None] * len(labelled), labelled
    unlabelled = list(torch.randperm(n_u, generator=generator, device=device).split(batch_u))
    if n_l == 0:
        return unlabelled, [None] * len(unlabelled)
    needed = len(unlabelled) * batch_l
    repeats = math.ceil(needed / n_l)
    cycled = torch.cat([torch.randperm(n_l, generator=generator, device=device)
                        for _ in range(repeats)])[:needed]
    return unlabelled, list(cycled.split(batch_l))


def maybe_binarise(x: torch.Tensor, binarise: bool, generator: torch.Generator) -> torch.Tensor:
    return torch.bernoulli(x, generator=generator) if binarise else x


def shard_batch(batch: Batch, rank: int, world_size: int) -> Batch:
    """Process `rank`'s contiguous rows of each part of a global batch, with the Shard that
    says where they sit (a part may hold no rows of this process: its collectives still run)."""
    spans: dict[str, RowSpan | None] = {"labelled": None, "unlabelled": None}
    parts: dict[str, torch.Tensor | None] = {}
    if batch.x_labelled is not None and batch.y_labelled is not None:
        start, stop = rows_of(len(batch.x_labelled), rank, world_size)
        spans["labelled"] = RowSpan(start, len(batch.x_labelled))
        parts.update(x_labelled=batch.x_labelled[start:stop],
                     y_labelled=batch.y_labelled[start:stop])
    if batch.x_unlabelled is not None:
        start, stop = rows_of(len(batch.x_unlabelled), rank, world_size)
        spans["unlabelled"] = RowSpan(start, len(batch.x_unlabelled))
        parts["x_unlabelled"] = batch.x_unlabelled[start:stop]
    return dataclasses.replace(batch, **parts, shard=Shard(**spans))
