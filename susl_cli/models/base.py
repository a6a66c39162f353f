"""The interface every susl model implements, and the objective M2 and GM-DGM share.

The interface (`SuslModel`), all the trainer, evaluation, prediction and sampling use:
    model(batch) -> LossOutput   the loss to minimise on one `Batch` (a labelled and/or an
                                 unlabelled part) and its named terms, detached, for the log;
                                 the model applies its own ObjectiveConfig (`model.objective`)
    classifier_logits(x)         logits of q(y|x), (B, K): what predict and evaluate use
    sample_means(components, n)  means of p(x|y, z) for z drawn from the prior: `susl sample`
    embed(x)                     a (B, latent_dim) summary of x for plots
    reset_parameters(generator)  seeded initialisation from `generator` (the global RNG when
                                 None), called by the trainer, not __init__
    log_prior                    buffer log p(y), (K,)
Each model file declares its settings dataclass (`settings_class`, a frozen subclass of
config.NetworkSettings) and the model is registered in susl_cli/models/__init__.py.

`ElboModel` holds what every model trained with the paper's objective shares: the classifier,
the objective over a Batch (below) from per-example ELBOs the subclass gives, the likelihood
and sampling from p(z|y) and p(x|.). `QyQzModel` is its default for the family with posterior
q(y, z | x) = q(y|x) q(z|x,y):
    q(y|x)   = Cat(softmax(classifier(x)))              the classifier, an amortised artefact
    q(z|x,y) = N(mu(x,y), diag exp(logvar(x,y)))        one trunk, mean and log-variance heads
Subclasses supply the generative model p(x, y, z) through `prior_z` (p(z|y)) and
`decoder_output` (the parameters of p(x|.)); `ElboModel.forward` is objective (11) of the paper:
    maximise  mean_l[ L(x,y) + alpha * log q(y|x) ] + mean_u[ E_q(y|x) L(x,y) + H[q(y|x)] ]
(minus the optional marginal-KL weight and merge-guard penalty); the loss is its negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from susl_cli import losses
from susl_cli.config import ModelConfig, NetworkSettings, ObjectiveConfig
from susl_cli.models.networks import MLP, ConditionalTrunk, GaussianHead, initialise
from susl_cli.models.shard import BatchMeans, Shard
from susl_cli.share_guard import share_penalty, soft_ratios


@dataclass(frozen=True)
class GuardState:
    """The merge guard's state for one step (susl_cli/share_guard.py), both (n_labelled,):
    Lagrange multipliers (0 = off) and the unlabelled share p_u(c) each labelled component
    should hold."""

    multipliers: torch.Tensor
    targets: torch.Tensor
    # Where the step's sharpened share ratios go for the guard's dual step (share_guard.ShareGuard
    # reads them after the optimiser step); None: not measured.
    observed: list[torch.Tensor] | None = None


@dataclass(frozen=True)
class Batch:
    """One training step's data: either part may be None (fully labelled or no labels)."""

    x_labelled: torch.Tensor | None = None  # (B_l, D)
    y_labelled: torch.Tensor | None = None  # (B_l,) component index
    x_unlabelled: torch.Tensor | None = None  # (B_u, D)
    generator: torch.Generator | None = None  # every random draw of the step comes from it
    guard: GuardState | None = None  # None: no merge guard on this run
    # This process's rows of a global batch split over the processes of a DDP run (every
    # batch mean then runs over the global batch: models/shard.py); None: one process
    shard: Shard | None = None
    # (B_u,) for each unlabelled row, the probability that it belongs to none of the labelled
    # classes, estimated from the labelled rows (susl_cli/label_evidence.py); None: not used
    evidence_unlabelled: torch.Tensor | None = None


@dataclass
class LossOutput:
    """The scalar to minimise and detached batch means of its named terms (device tensors)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


class SuslModel(nn.Module):
    """What the trainer and the analysis commands rely on (see the module docstring)."""

    name: ClassVar[str] = ""
    # How tables and figures name the model ("GM-DGM (mean-field)"); read through
    # models.model_title, which ignores a title inherited from the class a model extends.
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    settings_class: ClassVar[type[NetworkSettings]] = NetworkSettings

    def __init__(self, config: ModelConfig, objective: ObjectiveConfig | None = None) -> None:
        super().__init__()
        self.config = config
        self.settings = config.settings
        self.objective = objective or ObjectiveConfig()
        k = config.n_components
        prior = torch.tensor(config.prior or [1.0 / k] * k, dtype=torch.float32)
        self.register_buffer("log_prior", torch.log(prior))  # log p(y), (K,)

    def forward(self, batch: Batch) -> LossOutput:  # type: ignore[override]
        raise NotImplementedError

    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x), (B, K)."""
        raise NotImplementedError

    def sample_means(self, components: torch.Tensor, n_rows: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of p(x|y,z) for each component (columns) and z draws (rows): (n_rows, C, D)."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """A (B, latent_dim) summary of x."""
        raise NotImplementedError

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise the networks from `generator` (called by the trainer, not __init__).
        The trainer passes its own seeded generator, so two threads building runs at once
        cannot interleave their draws, as they could through the global RNG."""
        initialise(self, self.config.init, generator)


class ElboModel(SuslModel):
    """Shared by every model trained with objective (11): the classifier q(y|x), the objective
    over a Batch, the likelihood and sampling. Subclasses give the per-example ELBOs
    (`labelled_elbo`, `unlabelled_elbo`), `prior_z`, `decoder_output` and `embed`."""

    def __init__(self, config: ModelConfig, objective: ObjectiveConfig | None = None) -> None:
        super().__init__(config, objective)
        self.classifier = MLP(config.input_dim, config.hidden_units, config.n_components)

    # -- to be provided by each model -------------------------------------------------------
    def labelled_elbo(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None,
                      rows: losses.Rows = None) -> dict[str, torch.Tensor]:
        """Per-example L(x, y) ("elbo") and its parts for observed labels y (B,): named (B,).
        `rows`: where these examples sit in a batch split over processes (losses.draw)."""
        raise NotImplementedError

    def unlabelled_elbo(self, x: torch.Tensor, generator: torch.Generator | None,
                        logits: torch.Tensor | None = None,
                        rows: losses.Rows = None) -> dict[str, torch.Tensor]:
        """Per-example L_u(x) ("elbo") and its parts "recon", "kl_z", "kl_y": named (B,)."""
        raise NotImplementedError

    def prior_z(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of p(z|y) for one-hot y of shape (..., K)."""
        raise NotImplementedError

    def decoder_output(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Parameters of p(x|.): logits (Bernoulli) or means (Gaussian), shape (..., D)."""
        raise NotImplementedError

    # -- the objective -----------------------------------------------------------------------
    # Unlabelled terms logged as NAME_u beside elbo_u; a model with more terms extends this.
    logged_terms: ClassVar[tuple[str, ...]] = ("recon", "kl_z", "kl_y")

    def forward(self, batch: Batch) -> LossOutput:  # type: ignore[override]
        """Negative of objective (11) on the batch's labelled and unlabelled parts (under a
        Shard: of the global batch, models/shard.py)."""
        means = BatchMeans(batch.shard)
        labelled = unlabelled = None
        if batch.x_labelled is not None and batch.y_labelled is not None:
            labelled = self.labelled_terms(batch.x_labelled, batch.y_labelled, batch.generator,
                                           means.rows("labelled"))
        if batch.x_unlabelled is not None:
            unlabelled = self.unlabelled_terms(batch.x_unlabelled, batch.generator,
                                               means.rows("unlabelled"))
            if batch.evidence_unlabelled is not None:
                unlabelled["evidence"] = batch.evidence_unlabelled
        return self.assemble_loss(labelled, unlabelled, batch.guard, means)

    def labelled_terms(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None,
                       rows: losses.Rows = None) -> dict[str, torch.Tensor]:
        """L(x, y) ("elbo"), its parts and log q(y|x) ("log_qy") for labelled points, (B,)."""
        terms = self.labelled_elbo(x, y, generator, rows)
        terms["log_qy"] = -F.cross_entropy(self.classifier_logits(x), y, reduction="none")
        return terms

    def unlabelled_terms(self, x: torch.Tensor, generator: torch.Generator | None,
                         rows: losses.Rows = None) -> dict[str, torch.Tensor]:
        """L_u(x) ("elbo") and its parts, (B,), and the logits of q(y|.) ("qy_logits", (B, K))
        that the marginal KL and the merge guard act on."""
        logits = self.classifier_logits(x)
        terms = self.unlabelled_elbo(x, generator, logits, rows)
        terms["qy_logits"] = logits
        return terms

    def assemble_loss(self, labelled: dict[str, torch.Tensor] | None,
                      unlabelled: dict[str, torch.Tensor] | None,
                      guard: GuardState | None, means: BatchMeans | None = None) -> LossOutput:
        """The loss of objective (11) from the two parts' terms, and the logged batch means
        (`means`: over the global batch of a DDP run; None: this batch)."""
        cfg = self.objective
        means = means or BatchMeans(None)
        loss = torch.zeros((), device=self.log_prior.device)
        logged: dict[str, torch.Tensor] = {}
        if labelled is not None:
            loss = loss - means.mean(labelled["elbo"] + cfg.alpha * labelled["log_qy"], "labelled")
            logged["elbo_l"] = means.logged("elbo_l", labelled["elbo"], "labelled")
            logged["ce_l"] = means.logged("ce_l", -labelled["log_qy"], "labelled")
        if unlabelled is not None:
            logits = unlabelled["qy_logits"]
            loss = loss - means.mean(unlabelled["elbo"], "unlabelled")
            if cfg.marginal_kl:
                marginal = losses.categorical_kl(means.log_mean_probs(logits, "unlabelled"),
                                                 self.log_prior)
                loss = loss + cfg.marginal_kl * marginal
                logged["marginal_kl_u"] = marginal
            if guard is not None:  # logged every step (0 while off): one set of keys
                penalty = share_penalty(logits, guard.multipliers, guard.targets,
                                        cfg.labelled_share_cap, means.mean_fn("unlabelled"))
                if guard.observed is not None:
                    guard.observed.append(soft_ratios(logits, guard.targets,
                                                      means.mean_fn("unlabelled")))
                loss = loss + penalty
                logged["share_penalty_u"] = penalty
            if cfg.label_evidence and "evidence" in unlabelled:
                evidence_ce = losses.evidence_cross_entropy(logits, self.config.n_labelled,
                                                            unlabelled["evidence"])
                loss = loss + cfg.label_evidence * means.mean(evidence_ce, "unlabelled")
                logged["evidence_ce_u"] = means.logged("evidence_ce_u", evidence_ce,
                                                       "unlabelled")
            for name in ("elbo", *self.logged_terms):
                logged[f"{name}_u"] = means.logged(f"{name}_u", unlabelled[name], "unlabelled")
        logged["loss"] = loss
        return LossOutput(loss, means.finish({k: v.detach() for k, v in logged.items()}))

    # -- shared parts ------------------------------------------------------------------------
    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x), (B, K)."""
        return self.classifier(x)

    def log_likelihood(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x|.) summed over input dimensions; x broadcasts against params."""
        if self.config.likelihood == "bernoulli":
            return losses.log_bernoulli(x, params)
        return losses.log_gaussian_fixed(x, params, self.config.gaussian_sigma)

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


class QyQzModel(ElboModel):
    """Shared default for posteriors q(y|x) q(z|x,y): q(z|x,y), the ELBO terms for given
    labels and their expectation over y. Subclasses give `prior_z` and `decoder_output`."""

    def __init__(self, config: ModelConfig, objective: ObjectiveConfig | None = None) -> None:
        super().__init__(config, objective)
        k, h = config.n_components, config.hidden_units
        self.qz_trunk = ConditionalTrunk(config.input_dim, k, h)
        self.qz_head = GaussianHead(h, config.latent_dim)

    def labelled_elbo(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None,
                      rows: losses.Rows = None) -> dict[str, torch.Tensor]:
        """Per-example L(x, y) and its parts for observed labels y (B,) -> named (B,) tensors."""
        onehot = F.one_hot(y, self.config.n_components).to(x.dtype).unsqueeze(1)  # (B, 1, K)
        terms = {k: v.squeeze(1) for k, v in self.elbo_terms(x.unsqueeze(1), onehot,
                                                             self.objective.kl,
                                                             generator, rows).items()}
        terms["elbo"] = terms["recon"] - terms["kl_z"] + terms["log_py"]
        return terms

    def unlabelled_elbo(self, x: torch.Tensor, generator: torch.Generator | None,
                        logits: torch.Tensor | None = None,
                        rows: losses.Rows = None) -> dict[str, torch.Tensor]:
        """Per-example L_u(x) = E_q(y|x)[L(x,y)] + H[q(y|x)] and its parts -> named (B,).

        `logits` of q(y|x) may be passed in when the caller needs them too.
        """
        cfg = self.objective
        if logits is None:
            logits = self.classifier_logits(x)
        x3 = x.unsqueeze(1)  # (B, 1, D): broadcast over the label settings, computed once

        def terms_for(y: torch.Tensor) -> dict[str, torch.Tensor]:
            return self.elbo_terms(x3, y, cfg.kl, generator, rows)

        terms = losses.expectation_over_y(terms_for, logits, cfg.y_estimator,
                                          cfg.gumbel_temperature, generator, rows, cfg.y_topk)
        entropy = losses.categorical_entropy(logits)
        terms["kl_y"] = -(terms["log_py"] + entropy)  # KL(q(y|x) || p(y)) when enumerating
        terms["elbo"] = terms["recon"] - terms["kl_z"] - terms["kl_y"]
        return terms

    def posterior_z(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x,y); x (B, 1, D) and y (B, E, K) give (B, E, Z)."""
        return self.qz_head(self.qz_trunk(x, y))

    def elbo_terms(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        kl: str = "analytic",
        generator: torch.Generator | None = None,
        rows: losses.Rows = None,
    ) -> dict[str, torch.Tensor]:
        """Named terms of the labelled ELBO L(x, y) for x (B, 1, D) and one-hot y (B, E, K).

        L(x,y) = E_q(z|x,y)[log p(x|.)] - KL(q(z|x,y) || p(z|y)) + log p(y), each (B, E).
        The KL is analytic, or the one-sample estimate log q(z) - log p(z|y) at the same z.
        """
        z, kl_z = self.latent_terms(x, y, kl, generator, rows)
        recon = self.log_likelihood(x, self.decoder_output(z, y))
        log_py = (y * self.log_prior).sum(-1)
        return {"recon": recon, "kl_z": kl_z, "log_py": log_py}

    def latent_terms(
        self, x: torch.Tensor, y: torch.Tensor, kl: str, generator: torch.Generator | None,
        rows: losses.Rows = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A draw z ~ q(z|x,y), (B, E, Z), and KL(q(z|x,y) || p(z|y)), (B, E): analytic, or
        the one-sample estimate log q(z) - log p(z|y) at that z. `x` is whatever the encoder
        q(z|.) reads (B, 1, .), one-hot y (B, E, K)."""
        q_mean, q_logvar = self.posterior_z(x, y)
        z = losses.sample_normal(q_mean, q_logvar, generator, rows)
        p_mean, p_logvar = self.prior_z(y)
        if kl == "analytic":
            kl_z = losses.kl_normal_diag(q_mean, q_logvar, p_mean, p_logvar)
        else:
            kl_z = losses.log_normal_diag(z, q_mean, q_logvar) - losses.log_normal_diag(
                z, p_mean, p_logvar
            )
        return z, kl_z

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean of z under the most probable component: E_q(z|x, argmax q(y|x))[z]."""
        y = nn.functional.one_hot(self.classifier_logits(x).argmax(-1), self.config.n_components)
        mean, _ = self.posterior_z(x.unsqueeze(1), y.to(x.dtype).unsqueeze(1))
        return mean.squeeze(1)
