"""One global batch split over the processes of a data-parallel run (DDP under torchrun).

Every process draws the same global batch (same seeded generator) and keeps a contiguous
slice of its rows; `Shard` says which. The objective stays the one of the global batch:
    loss = -mean_l[...] - mean_u[...] + w KL(q_bar || p(y)) + penalty(q_bar)
where every mean (and q_bar, the batch mean of q(y|x)) runs over the GLOBAL batch. A batch
mean is the sum of the processes' local sums, so with the collectives below each process
computes the same global loss value, while the gradient of a collective flows back only
into that process's own rows: its backward is the identity, not another sum over the
processes. Each process's gradient is then its part of the total gradient, the parts add up
to the gradient of the global objective, and the trainer scales the loss by the world size
because DDP averages (rather than sums) the processes' gradients.

Randomness: the per-example noise of the global batch (z draws, Gumbel noise) is drawn in
full from the shared generator and sliced (`RowSpan`), so process r's rows see the draws
one process would have given them: the run does not depend on the number of processes.

Torch only (torch.distributed is part of torch); one process never calls a collective.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from susl_cli import losses


@dataclass(frozen=True)
class RowSpan:
    """This process's rows [start, start + local rows) of a global batch of `total` rows."""

    start: int
    total: int


@dataclass(frozen=True)
class Shard:
    """This process's part of one step's global batch; None for a part the step lacks."""

    labelled: RowSpan | None
    unlabelled: RowSpan | None
    group: Any = None  # the torch.distributed process group (None: the default group)


def rows_of(n_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """(start, stop) of `rank`'s contiguous share of `n_rows` rows: sizes differ by at most
    one (a last, partial batch), and a share may be empty."""
    base, extra = divmod(n_rows, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class _SumOverRanks(torch.autograd.Function):
    """Forward: the sum over the processes. Backward: the identity (see the module doc)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: Any) -> torch.Tensor:  # type: ignore[override]
        total = tensor.detach().clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None


class _GatherRanks(torch.autograd.Function):
    """Forward: every process's tensor stacked, (W, ...). Backward: this process's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: Any) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, tensor.detach().contiguous(), group=group)
        ctx.rank = dist.get_rank(group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad[ctx.rank], None


class BatchMeans:
    """Batch means of a step's per-example terms: `.mean()` in one process, means over the
    global batch under a Shard. `part` is "labelled" or "unlabelled"."""

    def __init__(self, shard: Shard | None) -> None:
        self.shard = shard
        self._shares: list[str] = []  # logged terms held as this process's share, to sum

    def rows(self, part: str) -> tuple[int, int] | None:
        """(start, global rows) for drawing this part's per-example noise; None: one process."""
        span = self._span(part)
        return None if span is None else (span.start, span.total)

    def mean(self, values: torch.Tensor, part: str) -> torch.Tensor:
        """Differentiable mean of (B, ...) values over the rows of the (global) batch."""
        span = self._span(part)
        if span is None:
            return values.mean(0)
        return _SumOverRanks.apply(values.sum(0), self.shard.group) / span.total

    def mean_fn(self, part: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda values: self.mean(values, part)

    def log_mean_probs(self, logits: torch.Tensor, part: str) -> torch.Tensor:
        """log q_bar, (K,): the log of the batch mean of softmax(logits) (B, K), computed
        in log space (a component q(y|x) all but rules out keeps a finite log)."""
        span = self._span(part)
        if span is None:
            return losses.log_batch_mean_probs(logits)
        # each process's logsumexp over its rows, then over the processes (an empty share's
        # -inf drops out), minus log of the global row count
        local = torch.logsumexp(torch.log_softmax(logits, -1), 0)  # (K,)
        return torch.logsumexp(_GatherRanks.apply(local, self.shard.group), 0) \
            - math.log(span.total)

    def logged(self, name: str, values: torch.Tensor, part: str) -> torch.Tensor:
        """A logged (detached) batch mean; under a Shard this process's share of it, summed
        over the processes by `finish` in one collective."""
        span = self._span(part)
        if span is None:
            return values.detach().mean()
        self._shares.append(name)
        return values.detach().sum() / span.total

    def finish(self, logged: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The logged terms as global batch means (one all-reduce under a Shard)."""
        if not self._shares:
            return logged
        shares = torch.stack([logged[name] for name in self._shares])
        dist.all_reduce(shares, group=self.shard.group)
        return {**logged, **dict(zip(self._shares, shares.unbind(), strict=True))}

    def _span(self, part: str) -> RowSpan | None:
        if self.shard is None:
            return None
        return self.shard.labelled if part == "labelled" else self.shard.unlabelled
