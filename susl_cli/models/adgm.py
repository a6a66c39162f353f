"""ADGM (Maaløe et al. 2016): M2 with an auxiliary variable a that makes q(y, z | x) richer.

Inference    q(a|x) q(y|a,x) q(z|a,x,y)
    q(a|x)     = N(mu(x), diag exp(logvar(x)))              two hidden layers over x
    q(y|a,x)   = Cat(softmax(classifier([x, a])))
    q(z|a,x,y) = N(mu(x,a,y), diag exp(logvar(x,a,y)))
Generative   p(x|y,z) p(a|x,y,z) p(z) p(y), p(z) = N(0, I), p(x|y,z) as M2's decoder
    p(a|x,y,z) = N(mu(x,y,z), diag exp(logvar(x,y,z)))     two hidden layers over [x, z, y]
Marginalising a leaves M2's p(x, y, z) unchanged; a only enriches the posterior: q(y|x) and
q(z|x,y) become continuous mixtures over q(a|x). The labelled bound is
    L(x,y) = E_q(a|x) q(z|a,x,y)[log p(x|y,z) + log p(a|x,y,z) + log p(z) + log p(y)
                                 - log q(a|x) - log q(z|a,x,y)]
and the unlabelled one E_q(a|x)[sum_y q(y|a,x) (the same inner terms) + H[q(y|a,x)]]. One a
is drawn per point and step and used both in q(y|a,x) and in the bound, so the shared
objective of base.py (expectation over y, entropy, alpha * log q(y|a,x), marginal KL and merge
guard on q(y|a,x)) applies unchanged to an encoder that reads [x, a] instead of x. The term
kl_a = log q(a|x) - log p(a|.) is the one-sample estimate at that a (p(a|.) depends on the
sampled z, so it has no closed form); it is logged as kl_a_u.

At prediction time q(y|x) = E_q(a|x)[q(y|a,x)] is approximated by q(y|a = mean of q(a|x), x):
one deterministic pass, no random draw, so `predict` and `evaluate` are reproducible without a
seed and cost what GM-DGM's classifier costs (the authors' run_mnist.py averages 100 draws of
a instead: 100 passes per point, and random).

`AuxiliaryModel` holds this machinery for any QyQzModel generative part: ADGM takes M2's,
agm_dgm.py GM-DGM's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from susl_cli import losses
from susl_cli.config import ModelConfig, NetworkSettings, ObjectiveConfig
from susl_cli.models.base import QyQzModel
from susl_cli.models.m2 import M2
from susl_cli.models.networks import MLP, ConditionalTrunk, GaussianHead, linear_relu


@dataclass(frozen=True)
class ADGMSettings(NetworkSettings):
    """ADGM's settings: the auxiliary variable's size besides the shared ones."""

    # d_a: 100 in the authors' released code (run_mnist.py: n_a=100, as large as their z).
    aux_dim: int = 100


class AuxiliaryDecoder(nn.Module):
    """p(a|x,y,z) (or p(a|x,z) with `n_components` 0): two hidden layers over [x, z, y].

    The first layer is W_x x + W_z z (+ W_y y) + b, a Linear on the concatenation, with x
    (B, 1, D) computed once per example and z (B, E, Z), y (B, E, K) per label setting.
    """

    def __init__(self, x_dim: int, z_dim: int, n_components: int, hidden: int,
                 aux_dim: int) -> None:
        super().__init__()
        self.x_layer = nn.Linear(x_dim, hidden)
        self.z_layer = nn.Linear(z_dim, hidden, bias=False)
        self.y_layer = nn.Linear(n_components, hidden, bias=False) if n_components else None
        self.second = nn.Linear(hidden, hidden)
        self.head = GaussianHead(hidden, aux_dim)

    def forward(self, x: torch.Tensor, z: torch.Tensor,
                y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.x_layer(x) + self.z_layer(z)  # (B, E, H)
        if self.y_layer is not None:
            if y.dim() > 2 and y.shape[0] > 1 and y.stride(0) == 0:
                y = y[:1]  # enumeration's one-hots, expanded over the batch: (1, E, K)
            h = h + self.y_layer(y)
        return self.head(linear_relu(self.second, h.relu_()))


class AuxiliaryModel(QyQzModel):
    """The auxiliary variable's networks and terms over a generative part supplied by a
    QyQzModel subclass later in the MRO (its `prior_z` and `decoder_output`)."""

    settings_class: ClassVar[type[NetworkSettings]] = ADGMSettings
    aux_uses_y: ClassVar[bool] = True  # p(a|x,y,z) rather than p(a|x,z)
    logged_terms = ("recon", "kl_z", "kl_a", "kl_y")

    def __init__(self, config: ModelConfig, objective: ObjectiveConfig | None = None) -> None:
        super().__init__(config, objective)
        d, k, h = config.input_dim, config.n_components, config.hidden_units
        a = self.settings.aux_dim
        self.qa = MLP(d, h, 2 * a)  # mean and log-variance of q(a|x)
        # q(y|a,x) and q(z|a,x,y) read [x, a]: they replace the base's x-only networks.
        self.classifier = MLP(d + a, h, k)
        self.qz_trunk = ConditionalTrunk(d + a, k, h)
        self.pa = AuxiliaryDecoder(d, config.latent_dim, k if self.aux_uses_y else 0, h, a)

    def posterior_a(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(a|x), each (B, A)."""
        mean, logvar = self.qa(x).chunk(2, dim=-1)
        return mean, logvar

    def sample_a(self, x: torch.Tensor, generator: torch.Generator | None,
                 rows: losses.Rows = None) -> tuple[torch.Tensor, torch.Tensor]:
        """[x, a] with a ~ q(a|x), (B, D + A), and log q(a|x) at that a, (B,)."""
        mean, logvar = self.posterior_a(x)
        a = losses.sample_normal(mean, logvar, generator, rows)
        return torch.cat([x, a], -1), losses.log_normal_diag(a, mean, logvar)

    def _with_aux(self, terms: dict[str, torch.Tensor],
                  log_qa: torch.Tensor) -> dict[str, torch.Tensor]:
        """Move E_q(y|.)[log p(a|.)] and log q(a|x) into kl_a and the bound."""
        terms["kl_a"] = log_qa - terms.pop("log_pa")
        terms["elbo"] = terms["elbo"] - terms["kl_a"]
        return terms

    def labelled_terms(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None,
                       rows: losses.Rows = None) -> dict[str, torch.Tensor]:
        xa, log_qa = self.sample_a(x, generator, rows)
        terms = self._with_aux(self.labelled_elbo(xa, y, generator, rows), log_qa)
        terms["log_qy"] = -F.cross_entropy(self.classifier(xa), y, reduction="none")
        return terms

    def unlabelled_terms(self, x: torch.Tensor, generator: torch.Generator | None,
                         rows: losses.Rows = None) -> dict[str, torch.Tensor]:
        xa, log_qa = self.sample_a(x, generator, rows)
        logits = self.classifier(xa)  # q(y|a,x) at the same a as the bound
        terms = self._with_aux(self.unlabelled_elbo(xa, generator, logits, rows), log_qa)
        terms["qy_logits"] = logits
        return terms

    def elbo_terms(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        kl: str = "analytic",
        generator: torch.Generator | None = None,
        rows: losses.Rows = None,
    ) -> dict[str, torch.Tensor]:
        """Terms of L(x, y) given a, for xa = [x, a] (B, 1, D + A) and one-hot y (B, E, K):
        recon, kl_z (as `kl` says), log p(a|x,[y],z) ("log_pa") and log p(y), each (B, E)."""
        x_only, a = x.split([self.config.input_dim, self.settings.aux_dim], dim=-1)
        z, kl_z = self.latent_terms(x, y, kl, generator, rows)  # q(z|a,x,y) reads [x, a]
        recon = self.log_likelihood(x_only, self.decoder_output(z, y))
        log_pa = losses.log_normal_diag(a, *self.pa(x_only, z, y))
        log_py = (y * self.log_prior).sum(-1)
        return {"recon": recon, "kl_z": kl_z, "log_pa": log_pa, "log_py": log_py}

    def mean_input(self, x: torch.Tensor) -> torch.Tensor:
        """[x, mean of q(a|x)], (B, D + A): the deterministic input of predict and embed."""
        return torch.cat([x, self.posterior_a(x)[0]], -1)

    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x) ~ q(y|a = E_q(a|x)[a], x), (B, K) (module docstring: why)."""
        return self.classifier(self.mean_input(x))

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of q(z|a,x,y) at a = mean of q(a|x) and y = argmax of classifier_logits."""
        xa = self.mean_input(x)
        y = F.one_hot(self.classifier(xa).argmax(-1), self.config.n_components)
        mean, _ = self.posterior_z(xa.unsqueeze(1), y.to(x.dtype).unsqueeze(1))
        return mean.squeeze(1)


class ADGM(AuxiliaryModel, M2):
    """ADGM: M2's p(x|y,z) p(z) p(y) with p(a|x,y,z), and q(a|x) q(y|a,x) q(z|a,x,y)."""

    name = "adgm"
    title = "ADGM"  # in tables and reports (models.model_title)
    settings_class = ADGMSettings
    description = "ADGM: M2 with an auxiliary variable a, q(a|x) q(y|a,x) q(z|a,x,y)"
