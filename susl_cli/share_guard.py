"""Acting on the merge signal: keep labelled components from absorbing unlabelled mass.

The labelled share ratio (train.largest_labelled_share_ratio) is the share of training points
argmax q(y|x) puts in a labelled component c over its prior share p(y=c). p(y=c) is estimated
from the mask (labelled count / label fraction / N), so well above 1 a labelled component
holds points its labels give no evidence for: a hidden class that looks like c has merged
into it (README "Choices": HAR split 3-5, MNIST SUS seed 3).

The guard treats "ratio_c <= cap" as a constraint and enforces it with a Lagrangian term on
each unlabelled batch,

    penalty = sum_{c labelled} lambda_c * relu(q_bar(c) / p_u(c) - cap),

q_bar the batch mean of q(y|x), p_u(c) the share of the *unlabelled* points expected in c
((p(y=c) N - labelled count of c) / N_u). The multipliers start at 0 (the plain objective)
and are updated once per epoch from the measured ratios (dual ascent on a log scale): doubled
while ratio_c > cap (from LAMBDA_START the first time), held while 1 <= ratio_c <= cap,
halved when c holds less than its prior share, and back to 0 below LAMBDA_START. A healthy
run (ratios 1.04-1.06 measured on MNIST SUS) never switches it on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

LAMBDA_START = 1.0  # nats per unit of relative share: the size of one ELBO difference of ~1/p_u
LAMBDA_MAX = 1e4
P_U_FLOOR = 1e-3  # a labelled class whose points are nearly all labelled still gets a target


def component_share_ratios(labelled: np.ndarray, unlabelled: np.ndarray,
                           prior: Sequence[float], n_labelled: int) -> np.ndarray:
    """(n_labelled,) share of training points argmax q(y|x) puts in c, over p(y=c)."""
    counts = (np.asarray(labelled) + np.asarray(unlabelled)).astype(np.float64)
    share = counts[:n_labelled] / max(counts.sum(), 1.0)
    return share / np.asarray(prior[:n_labelled], dtype=np.float64)


def unlabelled_targets(prior: Sequence[float], labelled_counts: np.ndarray,
                       n_unlabelled: int) -> np.ndarray:
    """(n_labelled,) p_u(c): the share of the unlabelled points expected in labelled class c.

    `labelled_counts` (n_labelled,) are the labelled training points per labelled component.
    """
    counts = np.asarray(labelled_counts, dtype=np.float64)
    n_total = counts.sum() + n_unlabelled
    p = np.asarray(prior[:counts.size], dtype=np.float64)
    expected = p * n_total - counts  # unlabelled points of class c the prior expects
    return np.maximum(expected / max(n_unlabelled, 1), P_U_FLOOR)


def update_multipliers(multipliers: Sequence[float], ratios: np.ndarray,
                       cap: float) -> list[float]:
    """One dual step per epoch: double lambda_c while ratio_c > cap; hold it while
    1 <= ratio_c <= cap (released at once, the merge came back: measured on the synthetic
    look-alike set); halve it when c holds less than its prior share."""
    out = []
    for lam, ratio in zip(multipliers, ratios, strict=True):
        if ratio > cap:
            lam = min(max(2 * lam, LAMBDA_START), LAMBDA_MAX)
        elif ratio < 1:
            lam = lam / 2 if lam / 2 >= LAMBDA_START else 0.0
        out.append(float(lam))
    return out


def share_penalty(logits: torch.Tensor, multipliers: torch.Tensor, targets: torch.Tensor,
                  cap: float, batch_mean: Callable[[torch.Tensor], torch.Tensor] | None = None
                  ) -> torch.Tensor:
    """sum_c lambda_c relu(q_bar(c) / p_u(c) - cap) over the labelled components (logits
    (B, K)): only the excess over the cap is pushed out, and only towards the extra
    components: for component c the other labelled components' logits are held fixed.

    Measured: a penalty on all of q_bar(c) emptied the labelled components of a tiny image set
    in 3 epochs; without the routing, mass pushed out of one labelled component went to
    another (MNIST 3,000-row slice, 6 epochs: labelled-class test accuracy 0.86 -> 0.58).
    `batch_mean` (default: the mean over the rows) takes q_bar over a batch split across
    processes (models/shard.py).
    """
    batch_mean = batch_mean or torch.mean
    n_labelled = multipliers.numel()
    labelled = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    labelled[:n_labelled] = True
    total = logits.new_zeros(())
    for c in torch.nonzero(multipliers > 0).flatten().tolist():
        others = labelled.clone()
        others[c] = False
        routed = torch.where(others, logits.detach(), logits)  # (B, K)
        q_bar = batch_mean(torch.softmax(routed, -1)[:, c])
        total = total + multipliers[c] * torch.relu(q_bar / targets[c] - cap)
    return total
