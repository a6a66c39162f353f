"""M2 / SSVAE (Kingma et al. 2014): p(x, y, z) = p(x|y,z) p(y) p(z), p(z) = N(0, I).

The label enters only the decoder, beside a style variable z that is independent of y a priori.
On data with unlabelled-only classes this is the baseline that fails to cluster them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from susl_cli.config import ModelConfig, NetworkSettings, ObjectiveConfig
from susl_cli.models.base import QyQzModel
from susl_cli.models.networks import ConditionalTrunk


@dataclass(frozen=True)
class M2Settings(NetworkSettings):
    """M2 has no settings beyond the shared latent size and hidden width."""


class M2(QyQzModel):
    """p(x|y,z): two hidden layers over [z, y], Bernoulli logits or Gaussian means."""

    name = "m2"
    title = "M2 (SSVAE)"  # in tables and reports (models.model_title)
    settings_class = M2Settings
    description = "M2 / SSVAE: p(x|y,z) p(y) p(z), standard normal p(z)"

    def __init__(self, config: ModelConfig, objective: ObjectiveConfig | None = None) -> None:
        super().__init__(config, objective)
        self.decoder_trunk = ConditionalTrunk(config.latent_dim, config.n_components,
                                              config.hidden_units)
        self.decoder_head = nn.Linear(config.hidden_units, config.input_dim)

    def prior_z(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (*y.shape[:-1], self.config.latent_dim)
        zeros = torch.zeros(shape, device=y.device, dtype=y.dtype)
        return zeros, zeros

    def decoder_output(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder_head(self.decoder_trunk(z, y))
