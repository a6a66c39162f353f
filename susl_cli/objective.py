"""The training objective (paper eqs 6, 7, 11) assembled from a model's ELBO terms.

Maximise  mean_l[ L(x,y) + alpha * log q(y|x) ] + mean_u[ E_q(y|x) L(x,y) + H[q(y|x)] ];
the trainer minimises the negative. Terms come back per example and, for logging, as a small
dataclass of named batch means the trainer records without knowing the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from susl_cli.config import PRIOR_MIN, TrainConfig
from susl_cli.errors import ConfigError
from susl_cli.losses import categorical_entropy, expectation_over_y
from susl_cli.models.base import SuslModel
from susl_cli.share_guard import ShareGuard


@dataclass
class LossOutput:
    """The scalar to minimise and detached batch means of its named terms (device tensors)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


def labelled_elbo(
    model: SuslModel, x: torch.Tensor, y: torch.Tensor, kl: str, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """Per-example L(x, y) and its parts for observed labels y (B,) -> named (B,) tensors."""
    onehot = F.one_hot(y, model.config.n_components).to(x.dtype).unsqueeze(1)  # (B, 1, K)
    terms = {k: v.squeeze(1) for k, v in model.elbo_terms(x.unsqueeze(1), onehot, kl,
                                                           generator).items()}
    terms["elbo"] = terms["recon"] - terms["kl_z"] + terms["log_py"]
    return terms


def unlabelled_elbo(
    model: SuslModel,
    x: torch.Tensor,
    estimator: str,
    temperature: float,
    kl: str,
    generator: torch.Generator | None,
    logits: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-example L_u(x) = E_q(y|x)[L(x,y)] + H[q(y|x)] and its parts -> named (B,) tensors.

    `logits` of q(y|x) may be passed in when the caller needs them too.
    """
    if logits is None:
        logits = model.classifier_logits(x)
    x3 = x.unsqueeze(1)  # (B, 1, D): broadcast over the label settings, computed once

    def terms_for(y: torch.Tensor) -> dict[str, torch.Tensor]:
        return model.elbo_terms(x3, y, kl, generator)

    terms = expectation_over_y(terms_for, logits, estimator, temperature, generator)
    entropy = categorical_entropy(logits)
    terms["kl_y"] = -(terms["log_py"] + entropy)  # KL(q(y|x) || p(y)) when enumerating
    terms["elbo"] = terms["recon"] - terms["kl_z"] - terms["kl_y"]
    return terms


def training_loss(
    model: SuslModel,
    x_labelled: torch.Tensor | None,
    y_labelled: torch.Tensor | None,
    x_unlabelled: torch.Tensor | None,
    config: TrainConfig,
    generator: torch.Generator | None = None,
    share_guard: ShareGuard | None = None,
) -> LossOutput:
    """Negative of objective (11) on one labelled and one unlabelled batch (either may be None).

    `share_guard`: the merge guard (susl_cli/share_guard.py), whose penalty is added on the
    unlabelled batch; None or all-zero multipliers = off.
    """
    loss = torch.zeros((), device=model.log_prior.device)
    logged: dict[str, torch.Tensor] = {}
    if x_labelled is not None and y_labelled is not None:
        lab = labelled_elbo(model, x_labelled, y_labelled, config.kl, generator)
        log_qy = -F.cross_entropy(model.classifier_logits(x_labelled), y_labelled,
                                  reduction="none")
        loss = loss - (lab["elbo"] + config.alpha * log_qy).mean()
        logged["elbo_l"] = lab["elbo"].mean()
        logged["ce_l"] = -log_qy.mean()
    if x_unlabelled is not None:
        logits = model.classifier_logits(x_unlabelled)
        unl = unlabelled_elbo(model, x_unlabelled, config.y_estimator, config.gumbel_temperature,
                              config.kl, generator, logits)
        loss = loss - unl["elbo"].mean()
        if config.marginal_kl:
            marginal = marginal_kl(logits, model.log_prior)
            loss = loss + config.marginal_kl * marginal
            logged["marginal_kl_u"] = marginal
        if share_guard is not None:  # logged every step (0 while off): one set of keys
            penalty = share_guard.penalty(logits)
            loss = loss + penalty
            logged["share_penalty_u"] = penalty
        logged["elbo_u"] = unl["elbo"].mean()
        logged["recon_u"] = unl["recon"].mean()
        logged["kl_z_u"] = unl["kl_z"].mean()
        logged["kl_y_u"] = unl["kl_y"].mean()
    logged["loss"] = loss
    return LossOutput(loss, {k: v.detach() for k, v in logged.items()})


def marginal_kl(logits: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """KL(q_bar || p(y)) with q_bar = the batch mean of q(y|x): how far the share of points each
    component receives is from the prior's. The ELBO's mean KL(q(y|x) || p(y)) equals the
    mutual information I(x; y) under q plus this term, so weighting it more keeps the aggregate
    posterior near p(y) (no component starved) without asking any one q(y|x) to be uncertain.
    """
    log_q = torch.log_softmax(logits, -1)  # (B, K)
    log_q_bar = torch.logsumexp(log_q, 0) - torch.log(torch.tensor(float(len(logits))))  # (K,)
    return (log_q_bar.exp() * (log_q_bar - log_prior)).sum()


def default_extra_components(n_labelled: int, n_classes: int) -> int:
    """40 extra components when some classes have no labels (paper section 3.2), else 0."""
    return 40 if n_labelled < n_classes else 0


def as_given_labelled_mass(labelled_counts: np.ndarray, n_train: int) -> float:
    """Prior mass of the labelled classes when the labels come from the user as given.

    The labelling rate is unknown, so the labelled classes get half the mass (the middle of
    what is possible), never less than the share of rows that carry a label. Erring low is
    the safer side: a labelled class spread into extra components is merged back by
    discovery, a new class squeezed into a labelled component is lost.
    """
    share = float(np.sum(labelled_counts)) / max(n_train, 1)
    return float(np.clip(max(0.5, share), 0.01, 0.99))


def class_prior(
    labelled_counts: np.ndarray, n_extra: int, labelled_mass: float | None
) -> tuple[float, ...]:
    """p(y) over K = n_labelled + n_extra components (README "Choices": prior p(y)).

    The labelled components share `labelled_mass` in proportion to their labelled counts
    (their observed frequency); the extra components share the rest uniformly. With no
    extra components the labelled classes take all the mass; with no labelled classes the
    prior is uniform.
    """
    counts = np.asarray(labelled_counts, dtype=float)
    n_labelled = counts.size
    if n_labelled + n_extra == 0:
        raise ConfigError("no labelled classes and no extra components: give "
                          "--extra-components N (N > 0) to cluster unlabelled data")
    if n_labelled == 0:
        return tuple([1.0 / n_extra] * n_extra)
    if n_extra == 0:
        return tuple((counts / counts.sum()).tolist())
    if labelled_mass is None or not 0 < labelled_mass < 1:
        raise ConfigError(
            f"--labelled-mass must be in (0, 1), got {labelled_mass}: it is the prior share "
            "of the data expected in the labelled classes"
        )
    labelled = labelled_mass * counts / counts.sum()
    extra = np.full(n_extra, (1 - labelled_mass) / n_extra)
    prior = np.concatenate([labelled, extra])
    if prior.min() < PRIOR_MIN:
        raise ConfigError(
            f"--labelled-mass {labelled_mass:g} gives a component the prior probability "
            f"{prior.min():g}, too small to train with (below {PRIOR_MIN:g}): choose a value "
            "nearer the share of the data expected in the labelled classes, e.g. 0.5"
        )
    return tuple(prior.tolist())


def estimate_labelled_mass(
    labelled_counts: np.ndarray, label_fraction: float | None, n_train: int, n_classes: int
) -> float:
    """Expected share of the data that belongs to the labelled classes.

    With a known label fraction p, the labelled classes hold about sum(counts) / p points;
    otherwise assume equally frequent classes: n_labelled / n_classes (the paper's "half").
    """
    counts = np.asarray(labelled_counts, dtype=float)
    if label_fraction:
        share = counts.sum() / label_fraction / max(n_train, 1)
    else:
        share = counts.size / max(n_classes, 1)
    return float(np.clip(share, 0.01, 0.99))
