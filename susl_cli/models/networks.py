"""Building blocks shared by the models: MLPs, a trunk conditioned on a one-hot label, heads.

Every network has two hidden ReLU layers (paper appendix A; the reference code used ReLU).
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """in -> H -> H -> out with ReLU; the last layer is the output head."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x))


class ConditionalTrunk(nn.Module):
    """Two hidden layers over the concatenation [a, y] of an input and a one-hot label.

    The first layer is written as W_a a + W_y y + b, which equals a Linear on [a, y]. Because
    the two parts broadcast, `a` of shape (B, 1, A) and `y` of shape (B, E, K) give (B, E, H)
    while W_a a is computed once per example, not E times: this is what makes exact
    enumeration over the K components cheap.
    """

    def __init__(self, in_dim: int, n_components: int, hidden: int) -> None:
        super().__init__()
        self.input_layer = nn.Linear(in_dim, hidden)
        self.label_layer = nn.Linear(n_components, hidden, bias=False)
        self.second = nn.Linear(hidden, hidden)

    def forward(self, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.input_layer(a) + self.label_layer(y))
        return torch.relu(self.second(h))


class GaussianHead(nn.Module):
    """Mean and log-variance of a diagonal Gaussian from a shared trunk's features."""

    def __init__(self, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.mean = nn.Linear(hidden, out_dim)
        self.logvar = nn.Linear(hidden, out_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(h), self.logvar(h)


HEAD_STD = 1e-3  # N(0, 0.001^2) kernels, paper appendix A


def initialise(module: nn.Module, scheme: str) -> None:
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
            nn.init.normal_(layer.weight, 0.0, HEAD_STD)
        else:
            nn.init.xavier_normal_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
