"""Model registry: the trainer and CLI pick models by name and never branch on the type."""

from __future__ import annotations

from susl_cli.config import ModelConfig
from susl_cli.errors import ConfigError
from susl_cli.models.base import SuslModel
from susl_cli.models.gmdgm import GMDGM
from susl_cli.models.m2 import M2

MODELS: dict[str, type[SuslModel]] = {cls.name: cls for cls in (M2, GMDGM)}


def build_model(config: ModelConfig) -> SuslModel:
    """Construct (not initialise) the model named by `config.model`."""
    try:
        cls = MODELS[config.model]
    except KeyError:
        raise ConfigError(
            f"unknown model {config.model!r}: choose one of {', '.join(sorted(MODELS))}"
        ) from None
    return cls(config)


__all__ = ["MODELS", "SuslModel", "build_model"]
