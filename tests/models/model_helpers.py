"""Helpers the model tests share."""

from __future__ import annotations

import torch

from susl_cli.config import ModelConfig, ObjectiveConfig
from susl_cli.models import SuslModel, build_model


def perturbed_model(config: ModelConfig, objective: ObjectiveConfig, seed: int = 0) -> SuslModel:
    """The registry's model for `config` in float64, its initialised parameters moved by
    0.3 * N(0, 1) noise so that no head sits near zero (KL terms and classifier logits are
    then far from their trivial values). The global torch RNG is left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(config, objective)
        model.reset_parameters()
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.3 * torch.randn_like(param))
    return model.double()
