"""GM-DGM: p(x, y, z) = p(x|z) p(z|y) p(y) with a Gaussian mixture prior on z.

p(z|y) = N(mu_y, diag exp(logvar_y)) is a learnt look-up table, one row per component, so
each component owns a region of latent space: the clustering inductive bias M2 lacks.
`MixtureGenerative` is that generative model alone, shared with the mean-field posterior
(gmdgm_mf.py); `GMDGM` pairs it with the default posterior q(y|x) q(z|x,y).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from susl_cli.config import ModelConfig, NetworkSettings, ObjectiveConfig
from susl_cli.models.base import ElboModel, QyQzModel
from susl_cli.models.networks import MLP


@dataclass(frozen=True)
class GMDGMSettings(NetworkSettings):
    """GM-DGM has no settings beyond the shared latent size and hidden width."""


class MixtureGenerative(ElboModel):
    """p(x|z): two hidden layers over z; p(z|y): per-component mean and log-variance table.

    Cooperative: listed before the posterior's class (`class GMDGM(MixtureGenerative,
    QyQzModel)`), its layers are registered after the posterior's, as they always were.
    """

    def __init__(self, config: ModelConfig, objective: ObjectiveConfig | None = None) -> None:
        super().__init__(config, objective)
        self.decoder = MLP(config.latent_dim, config.hidden_units, config.input_dim)
        self.component_mean = nn.Parameter(torch.empty(config.n_components, config.latent_dim))
        self.component_logvar = nn.Parameter(torch.empty(config.n_components, config.latent_dim))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        super().reset_parameters(generator)
        # Spread the component means so that components start distinguishable; unit variances.
        nn.init.normal_(self.component_mean, 0.0, 1.0, generator=generator)
        nn.init.zeros_(self.component_logvar)

    def prior_z(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # y is one-hot, so y @ table is an exact row look-up (and differentiable in y for Gumbel).
        return y @ self.component_mean, y @ self.component_logvar

    def decoder_output(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


class GMDGM(MixtureGenerative, QyQzModel):
    """GM-DGM's generative model with the posterior q(y|x) q(z|x,y)."""

    name = "gmdgm"
    title = "GM-DGM"  # in tables and reports (models.model_title)
    settings_class = GMDGMSettings
    description = "GM-DGM: p(x|z) p(z|y) p(y), Gaussian-mixture prior on z"
