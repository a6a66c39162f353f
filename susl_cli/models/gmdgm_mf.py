"""GM-DGM with a mean-field posterior: q(y, z | x) = q(y|x) q(z|x) (VaDE's factorisation).

The generative model is GM-DGM's, p(x, y, z) = p(x|z) p(z|y) p(y) with p(z|y) = N(mu_y,
diag exp(logvar_y)) (gmdgm.py). Because neither q(z|x) nor p(x|z) sees y, the unlabelled ELBO
is exact in y with one encoder and one decoder pass per point:
    L_u(x) = E_q(z|x)[log p(x|z)] - sum_y q(y|x) KL(q(z|x) || p(z|y)) - KL(q(y|x) || p(y))
and the labelled one is
    L(x, y) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z|y)) + log p(y).
The sum over y touches only K closed-form Gaussian KLs per point, (B, K, Z) numbers, against
GM-DGM's K encoder and decoder passes.

The y estimator: this model always enumerates, and `--y-estimator gumbel` (with its
temperature) has no effect. A Gumbel sample would save nothing (the K KLs cost less than the
one decoder pass) and only add variance. `--kl sampled` is honoured: each KL is then
log q(z|x) - log p(z|y) at the one z drawn for the reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from susl_cli import losses
from susl_cli.config import ModelConfig, NetworkSettings, ObjectiveConfig
from susl_cli.models.gmdgm import MixtureGenerative
from susl_cli.models.networks import MLP


@dataclass(frozen=True)
class GMDGMMeanFieldSettings(NetworkSettings):
    """No settings beyond the shared latent size and hidden width."""


class GMDGMMeanField(MixtureGenerative):
    """q(z|x): two hidden layers over x, one output layer holding mean and log-variance."""

    name = "gmdgm-mf"
    title = "GM-DGM (mean-field)"  # in tables and reports (models.model_title)
    settings_class = GMDGMMeanFieldSettings
    description = "GM-DGM with mean-field q(y|x) q(z|x): exact sum over y, one decoder pass"

    def __init__(self, config: ModelConfig, objective: ObjectiveConfig | None = None) -> None:
        super().__init__(config, objective)
        self.qz_encoder = MLP(config.input_dim, config.hidden_units, 2 * config.latent_dim)

    def posterior_z(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x), each (B, Z)."""
        mean, logvar = self.qz_encoder(x).chunk(2, dim=-1)
        return mean, logvar

    def shared_terms(self, x: torch.Tensor, generator: torch.Generator | None,
                     rows: losses.Rows = None) -> tuple[torch.Tensor, torch.Tensor]:
        """recon = log p(x|z) at one z ~ q(z|x), (B,), and KL(q(z|x) || p(z|y)) for every
        component y, (B, K): analytic, or log q(z|x) - log p(z|y) at that z (`--kl sampled`)."""
        q_mean, q_logvar = self.posterior_z(x)  # (B, Z)
        z = losses.sample_normal(q_mean, q_logvar, generator, rows)
        recon = self.log_likelihood(x, self.decoder(z))  # p(x|z): one pass, no y
        p_mean, p_logvar = self.component_mean, self.component_logvar  # (K, Z)
        if self.objective.kl == "analytic":
            kl_z = losses.kl_normal_diag(q_mean.unsqueeze(1), q_logvar.unsqueeze(1), p_mean,
                                         p_logvar)
        else:
            kl_z = (losses.log_normal_diag(z, q_mean, q_logvar).unsqueeze(1)
                    - losses.log_normal_diag(z.unsqueeze(1), p_mean, p_logvar))
        return recon, kl_z  # (B,), (B, K)

    def labelled_elbo(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None,
                      rows: losses.Rows = None) -> dict[str, torch.Tensor]:
        """L(x, y) and its parts for observed labels y (B,): named (B,) tensors."""
        recon, kl_all = self.shared_terms(x, generator, rows)
        kl_z = kl_all.gather(1, y.unsqueeze(1)).squeeze(1)
        log_py = self.log_prior[y]
        return {"recon": recon, "kl_z": kl_z, "log_py": log_py,
                "elbo": recon - kl_z + log_py}

    def unlabelled_elbo(self, x: torch.Tensor, generator: torch.Generator | None,
                        logits: torch.Tensor | None = None,
                        rows: losses.Rows = None) -> dict[str, torch.Tensor]:
        """L_u(x) and its parts, the sum over y always exact (module docstring): named (B,)."""
        if logits is None:
            logits = self.classifier_logits(x)
        recon, kl_all = self.shared_terms(x, generator, rows)

        def terms_for(y: torch.Tensor) -> dict[str, torch.Tensor]:  # y (B, K, K) -> (B, K)
            return {"kl_z": (y * kl_all.unsqueeze(1)).sum(-1),
                    "log_py": (y * self.log_prior).sum(-1)}

        terms = losses.expectation_over_y(terms_for, logits, "enumerate")
        terms["recon"] = recon
        terms["kl_y"] = -(terms["log_py"] + losses.categorical_entropy(logits))
        terms["elbo"] = recon - terms["kl_z"] - terms["kl_y"]
        return terms

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean of z, E_q(z|x)[z]: (B, Z)."""
        return self.posterior_z(x)[0]
