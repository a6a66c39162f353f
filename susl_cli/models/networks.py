"""Building blocks shared by the models: MLPs, a trunk conditioned on a one-hot label, heads.

Every network has two hidden ReLU layers (paper appendix A; the reference code used ReLU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def linear_relu(layer: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    """relu(layer(h)) for h of shape (..., in), the ReLU applied in place on the 2-D product.

    In place saves one (rows, H) buffer per layer. It must act on the 2-D product: on the
    3-D view that F.linear returns for a 3-D input, autograd would copy the whole buffer back.
    """
    out = F.linear(h.reshape(-1, h.shape[-1]), layer.weight, layer.bias).relu_()
    return out.view(*h.shape[:-1], out.shape[-1])


class MLP(nn.Module):
    """in -> H -> H -> out with ReLU; the last layer is the output head."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # self.hidden(x), with the ReLUs in place (see linear_relu)
        h = linear_relu(self.hidden[2], linear_relu(self.hidden[0], x))
        return self.head(h)


class ConditionalTrunk(nn.Module):
    """Two hidden layers over the concatenation [a, y] of an input and a one-hot label.

    The first layer is written as W_a a + W_y y + b, which equals a Linear on [a, y]. Because
    the two parts broadcast, `a` of shape (B, 1, A) and `y` of shape (B, E, K) give (B, E, H)
    while W_a a is computed once per example, not E times: this is what makes exact
    enumeration over the K components cheap. Likewise, when y is the same for every example
    (enumeration passes the K one-hots expanded over the batch, stride 0), W_y y is computed
    once, (1, K, H), not B times.
    """

    def __init__(self, in_dim: int, n_components: int, hidden: int) -> None:
        super().__init__()
        self.input_layer = nn.Linear(in_dim, hidden)
        self.label_layer = nn.Linear(n_components, hidden, bias=False)
        self.second = nn.Linear(hidden, hidden)

    def forward(self, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if _same_for_every_example(y) and a.dim() == y.dim() and a.shape[0] == y.shape[0]:
            y = y[:1]  # (1, E, K): identical rows, broadcast in the sum below
        h = (self.input_layer(a) + self.label_layer(y)).relu_()  # (B, E, H), a fresh sum
        return linear_relu(self.second, h)


def _same_for_every_example(y: torch.Tensor) -> bool:
    """True when y (B, E, K) is one (E, K) tensor expanded over the batch (stride 0)."""
    return y.dim() > 2 and y.shape[0] > 1 and y.stride(0) == 0


class GaussianHead(nn.Module):
    """Mean and log-variance of a diagonal Gaussian from a shared trunk's features.

    Two Linear layers (`mean`, `logvar`) evaluated as one matrix product with their weights
    stacked, which reads the (B, E, H) features once instead of twice.
    """

    def __init__(self, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.mean = nn.Linear(hidden, out_dim)
        self.logvar = nn.Linear(hidden, out_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = torch.cat([self.mean.weight, self.logvar.weight])  # (2Z, H)
        bias = torch.cat([self.mean.bias, self.logvar.bias])
        mean, logvar = F.linear(h, weight, bias).chunk(2, dim=-1)
        return mean, logvar


HEAD_STD = 1e-3  # N(0, 0.001^2) kernels, paper appendix A


def initialise(module: nn.Module, scheme: str, generator: torch.Generator | None = None) -> None:
    """Reset every Linear layer: biases zero; kernels per `scheme`.

    "paper": all kernels N(0, 0.001^2). "reference": Glorot-normal hidden kernels, and
    N(0, 0.001^2) for output heads (`head`, `*_head`, `mean`, `logvar`), as the authors' code.
    """
    heads = {"head", "mean", "logvar"}
    for name, layer in module.named_modules():
        if not isinstance(layer, nn.Linear):
            continue
        last = name.rsplit(".", 1)[-1]
        is_head = last in heads or last.endswith("_head")
        if scheme == "paper" or is_head:
            nn.init.normal_(layer.weight, 0.0, HEAD_STD, generator=generator)
        else:
            nn.init.xavier_normal_(layer.weight, generator=generator)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
