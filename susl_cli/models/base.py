"""The interface every susl model implements, and the parts M2 and GM-DGM share.

All models here share the variational posterior q(y, z | x) = q(y|x) q(z|x,y):
    q(y|x)   = Cat(softmax(classifier(x)))              the classifier, an amortised artefact
    q(z|x,y) = N(mu(x,y), diag exp(logvar(x,y)))        one trunk, mean and log-variance heads
and differ in the generative model p(x, y, z), supplied by subclasses through `prior_z`
(p(z|y)) and `decoder_output` (the parameters of p(x|.)).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from susl_cli import losses
from susl_cli.config import ModelConfig
from susl_cli.models.networks import MLP, ConditionalTrunk, GaussianHead, initialise


class SuslModel(nn.Module):
    """Base class: classifier, q(z|x,y), the ELBO terms for given labels, and sampling."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        k, h = config.n_components, config.hidden_units
        prior = torch.tensor(config.prior or [1.0 / k] * k, dtype=torch.float32)
        self.register_buffer("log_prior", torch.log(prior))  # log p(y), (K,)
        self.classifier = MLP(config.input_dim, h, k)
        self.qz_trunk = ConditionalTrunk(config.input_dim, k, h)
        self.qz_head = GaussianHead(h, config.latent_dim)

    # -- to be provided by each model -------------------------------------------------------
    def prior_z(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of p(z|y) for one-hot y of shape (..., K)."""
        raise NotImplementedError

    def decoder_output(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Parameters of p(x|.): logits (Bernoulli) or means (Gaussian), shape (..., D)."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Initialise the networks (called by the trainer after seeding, not by __init__)."""
        initialise(self, self.config.init)

    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x), (B, K)."""
        return self.classifier(x)

    def posterior_z(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x,y); x (B, 1, D) and y (B, E, K) give (B, E, Z)."""
        return self.qz_head(self.qz_trunk(x, y))

    def log_likelihood(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x|.) summed over input dimensions; x broadcasts against params."""
        if self.config.likelihood == "bernoulli":
            return losses.log_bernoulli(x, params)
        return losses.log_gaussian_fixed(x, params, self.config.gaussian_sigma)

    def elbo_terms(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        kl: str = "analytic",
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Named terms of the labelled ELBO L(x, y) for x (B, 1, D) and one-hot y (B, E, K).

        L(x,y) = E_q(z|x,y)[log p(x|.)] - KL(q(z|x,y) || p(z|y)) + log p(y), each (B, E).
        The KL is analytic, or the one-sample estimate log q(z) - log p(z|y) at the same z.
        """
        q_mean, q_logvar = self.posterior_z(x, y)
        z = losses.sample_normal(q_mean, q_logvar, generator)
        p_mean, p_logvar = self.prior_z(y)
        if kl == "analytic":
            kl_z = losses.kl_normal_diag(q_mean, q_logvar, p_mean, p_logvar)
        else:
            kl_z = losses.log_normal_diag(z, q_mean, q_logvar) - losses.log_normal_diag(
                z, p_mean, p_logvar
            )
        recon = self.log_likelihood(x, self.decoder_output(z, y))
        log_py = (y * self.log_prior).sum(-1)
        return {"recon": recon, "kl_z": kl_z, "log_py": log_py}

    def mean_x(self, params: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|.) from its parameters."""
        return torch.sigmoid(params) if self.config.likelihood == "bernoulli" else params

    @torch.no_grad()
    def sample_means(
        self, components: torch.Tensor, n_rows: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean of p(x|y,z) for each component (columns) and z draws (rows): (n_rows, C, D).

        Rows share one standard-normal draw eps; z = mu_y + sigma_y * eps, so for M2 (p(z) =
        N(0, I)) each row is one shared z across components, and for GM-DGM each row is the
        same relative position within each component's Gaussian.
        """
        k = self.config.n_components
        device = self.log_prior.device
        dtype = self.log_prior.dtype
        y = nn.functional.one_hot(components.to(device), k).to(dtype)  # (C, K)
        mean, logvar = self.prior_z(y)  # (C, Z)
        eps = torch.randn((n_rows, 1, self.config.latent_dim), generator=generator, device=device,
                          dtype=dtype)
        z = mean.unsqueeze(0) + torch.exp(0.5 * logvar).unsqueeze(0) * eps  # (R, C, Z)
        return self.mean_x(self.decoder_output(z, y.expand(n_rows, -1, -1)))

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean of z under the most probable component: E_q(z|x, argmax q(y|x))[z]."""
        y = nn.functional.one_hot(self.classifier_logits(x).argmax(-1), self.config.n_components)
        mean, _ = self.posterior_z(x.unsqueeze(1), y.to(x.dtype).unsqueeze(1))
        return mean.squeeze(1)
