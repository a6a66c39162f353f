"""Acting on the merge signal: keep labelled components from absorbing unlabelled mass.

The labelled share ratio (diagnostics.largest_labelled_share_ratio) is the share of training points
argmax q(y|x) puts in a labelled component c over its prior share p(y=c). p(y=c) is estimated
from the mask (labelled count / label fraction / N), so well above 1 a labelled component
holds points its labels give no evidence for: a hidden class that looks like c has merged
into it (README "Choices": HAR split 3-5, MNIST SUS seed 3).

The guard treats "ratio_c <= cap" as a constraint and enforces it with a Lagrangian term on
each unlabelled batch,

    penalty = sum_{c labelled} lambda_c * relu(q_bar(c) / p_u(c) - cap),

q_bar the batch mean of q(y|x), p_u(c) the share of the *unlabelled* points expected in c
((p(y=c) N - labelled count of c) / N_u). The multipliers start at 0 (the plain objective)
and take one dual step per optimisation step (ShareGuard.step), driven by an exponential
moving average of the batches' ratio q_bar(c) / p_u(c), q sharpened to temperature SHARPEN
(a differentiable stand-in for the argmax share; see soft_ratios): multiplied by STEP_GROWTH while
the average is above the cap (from LAMBDA_START the first time), held while it lies in
[1, cap], divided by STEP_GROWTH while c holds less than its expected share, back to 0 below
LAMBDA_START. Measured on HAR split 1,3,5 (docs/results.md "Split robustness"): the first
version, doubling once per epoch from argmax counts, needed more epochs than a 10-epoch run
has, and the share stayed at 3.06x. On a healthy run (HAR split 0-2) it acts in the first
epochs, while the labelled components still hold too much, and is back to 0 by epoch 5.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

LAMBDA_START = 1.0  # nats per unit of relative share: the size of one ELBO difference of ~1/p_u
LAMBDA_MAX = 1e4
P_U_FLOOR = 1e-3  # a labelled class whose points are nearly all labelled still gets a target
STEP_GROWTH = 1.05  # per step: x2 in ~14 steps, x100 in ~94 (HAR: 66 steps an epoch)
EMA_DECAY = 0.9  # the soft ratio averaged over ~10 batches: one batch's noise does not act
WARMUP_EPOCHS = 1  # epochs before the guard acts (see ShareGuard)
SHARPEN = 0.25  # temperature of the share the guard measures and penalises (see soft_ratios)

# The mean over a batch's rows, (B, ...) -> (...); under DDP models/shard.py passes the mean over
# the global batch, so every process measures and penalises the same share.
BatchMean = Callable[[torch.Tensor], torch.Tensor]


def _row_mean(values: torch.Tensor) -> torch.Tensor:
    return values.mean(0)


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


def dual_step(multipliers: torch.Tensor, ratios: torch.Tensor, cap: float) -> torch.Tensor:
    """One bounded multiplicative dual step: lambda_c x STEP_GROWTH while ratio_c > cap (from
    LAMBDA_START), held while 1 <= ratio_c <= cap, / STEP_GROWTH while ratio_c < 1 (0 below
    LAMBDA_START). Holding inside the cap keeps the force ready: released at once, a merge came
    back within an epoch (synthetic look-alike set)."""
    up = (multipliers * STEP_GROWTH).clamp(LAMBDA_START, LAMBDA_MAX)
    down = multipliers / STEP_GROWTH
    down = torch.where(down >= LAMBDA_START, down, torch.zeros_like(down))
    return torch.where(ratios > cap, up, torch.where(ratios < 1, down, multipliers))


def soft_ratios(logits: torch.Tensor, targets: torch.Tensor,
                batch_mean: BatchMean | None = None) -> torch.Tensor:
    """(n_labelled,) q_bar(c) / p_u(c) on an unlabelled batch (logits (B, K)), no gradient,
    with q sharpened (softmax(logits / SHARPEN)): the share that matters is argmax q(y|x)'s,
    and on the synthetic look-alike set the plain soft share sat at 1.06x while the argmax
    share was 2-3x (q(c|x) ~ 0.4 for the merged class, the rest spread over the extras)."""
    q = torch.softmax(logits.detach() / SHARPEN, -1)[:, :targets.numel()]
    return (batch_mean or _row_mean)(q) / targets


def share_penalty(logits: torch.Tensor, multipliers: torch.Tensor, targets: torch.Tensor,
                  cap: float, batch_mean: BatchMean | None = None) -> torch.Tensor:
    """sum_c lambda_c relu(q_bar(c) / p_u(c) - cap) over the labelled components (logits
    (B, K)): only the excess over the cap is pushed out, and only towards the extra
    components: for component c the other labelled components' logits are held fixed.

    Measured: a penalty on all of q_bar(c) emptied the labelled components of a tiny image set
    in 3 epochs; without the routing, mass pushed out of one labelled component went to
    another (MNIST 3,000-row slice, 6 epochs: labelled-class test accuracy 0.86 -> 0.58).
    `batch_mean`: see BatchMean.
    """
    n = multipliers.numel()
    logits = logits / SHARPEN  # the share soft_ratios measures
    e = torch.exp(logits - logits.detach().max(-1, keepdim=True).values)  # (B, K)
    held = e[:, :n].detach()  # labelled components seen from another labelled one: fixed
    # q(c|x) with every other labelled logit detached: the softmax's value, routed gradient
    denominator = e[:, :n] + (held.sum(-1, keepdim=True) - held) + e[:, n:].sum(-1, keepdim=True)
    q_bar = (batch_mean or _row_mean)(e[:, :n] / denominator)  # (n,)
    return (multipliers * torch.relu(q_bar / targets - cap)).sum()


class ShareGuard:
    """The guard's state during training: multipliers and the moving average of the
    sharpened share ratio, both (n_labelled,) device tensors, updated without a host sync.

    Each step's objective measures the sharpened ratios and appends them to `observed`
    (models/base.py, through GuardState), or `penalty(logits)` does both here; `step()` after
    the optimiser step folds them into the average and takes the dual step. `state()` is what
    the checkpoint keeps so a resumed run continues the same schedule.
    """

    def __init__(self, targets: torch.Tensor, cap: float, multipliers: Sequence[float],
                 average: Sequence[float] | None = None) -> None:
        self.targets, self.cap = targets, cap
        self.multipliers = torch.tensor(list(multipliers), dtype=targets.dtype,
                                        device=targets.device)
        self.average = None if not average else torch.tensor(
            list(average), dtype=targets.dtype, device=targets.device)
        self.observed: list[torch.Tensor] = []  # this step's measured ratios

    def penalty(self, logits: torch.Tensor, batch_mean: BatchMean | None = None) -> torch.Tensor:
        self.observed.append(soft_ratios(logits, self.targets, batch_mean))
        return share_penalty(logits, self.multipliers, self.targets, self.cap, batch_mean)

    def step(self) -> None:
        if not self.observed:
            return
        last = self.observed[-1]
        self.observed.clear()
        self.average = last if self.average is None else (
            EMA_DECAY * self.average + (1 - EMA_DECAY) * last)
        self.multipliers = dual_step(self.multipliers, self.average, self.cap)

    def state(self) -> dict[str, list[float]]:
        average = [] if self.average is None else self.average.tolist()
        return {"share_multipliers": self.multipliers.tolist(), "share_average": average}
