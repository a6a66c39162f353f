"""Model registry: the trainer and CLI pick models by name and never branch on the type.

Adding a model: one file in this folder (a SuslModel subclass with its `name`, `title`,
`description` and `settings_class`) and one line in MODELS below.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from susl_cli.config import ModelConfig, NetworkSettings, ObjectiveConfig, from_dict
from susl_cli.errors import ConfigError
from susl_cli.models.adgm import ADGM
from susl_cli.models.agm_dgm import AGMDGM
from susl_cli.models.base import Batch, ElboModel, GuardState, LossOutput, QyQzModel, SuslModel
from susl_cli.models.gmdgm import GMDGM
from susl_cli.models.gmdgm_mf import GMDGMMeanField
from susl_cli.models.m2 import M2

MODELS: dict[str, type[SuslModel]] = {
    "m2": M2,
    "gmdgm": GMDGM,
    "gmdgm-mf": GMDGMMeanField,
    "adgm": ADGM,
    "agm-dgm": AGMDGM,
}


def model_class(name: str) -> type[SuslModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))}"
        ) from None


def model_title(name: str) -> str:
    """How tables, reports and figures name model `name`: the `title` its class declares.
    The id itself where there is none: an id no model here registers (a row of a results
    file from another version), or a class without a title of its own (one inherited from
    the class it extends would name the parent model)."""
    cls = MODELS.get(name)
    return (cls.__dict__.get("title") if cls is not None else None) or name


def model_label(name: str) -> str:
    """`id: title` for settings tables, which show both the name `--model` takes and the
    model's title; the id alone where the title is the id."""
    title = model_title(name)
    return name if title == name else f"{name}: {title}"


def setting_names(name: str) -> tuple[str, ...]:
    """The settings a user may give model `name` (`--model-option KEY=VALUE`)."""
    return tuple(f.name for f in dataclasses.fields(model_class(name).settings_class))


def model_settings(name: str, values: Mapping[str, Any]) -> NetworkSettings:
    """Model `name`'s settings dataclass from KEY -> value (text from the command line is
    converted to the field's type); unknown keys and bad values fail in one line."""
    cls = model_class(name)
    types = typing.get_type_hints(cls.settings_class)
    kwargs = {}
    for key, value in values.items():
        if key not in types:
            raise ConfigError(f"model {name} has no setting {key!r}: choose from "
                              f"{', '.join(setting_names(name))}")
        kwargs[key] = _convert(name, key, value, types[key])
    return cls.settings_class(**kwargs)


def _convert(model: str, key: str, value: Any, kind: Any) -> Any:
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if kind is int and not isinstance(value, bool):
            number = float(value)
            if number != int(number):
                raise ValueError(value)
            return int(number)
        if kind in (float, str, bool):
            return kind(value)
    except (TypeError, ValueError, OverflowError):
        pass
    else:
        return value  # a type without a conversion here: the dataclass checks it
    name = getattr(kind, "__name__", str(kind))
    raise ConfigError(f"model option {key}={value!r} of {model} must be a {name}")


def build_model(config: ModelConfig, objective: ObjectiveConfig | None = None) -> SuslModel:
    """Construct (not initialise) the model named by `config.model`, its settings checked
    against the model's settings dataclass."""
    cls = model_class(config.model)
    settings = config.settings
    if type(settings) is not cls.settings_class:
        settings = model_settings(config.model, dataclasses.asdict(settings))
        config = dataclasses.replace(config, settings=settings)
    return cls(config, objective)


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """Flat dict for a checkpoint: the model's settings beside the shared fields (as files
    written before the registry hold them)."""
    values = dataclasses.asdict(config)
    values.update(values.pop("settings"))
    return values


def model_config_from_dict(values: Mapping[str, Any]) -> ModelConfig:
    """Inverse of model_config_to_dict; keys unknown to the model are ignored (newer files)."""
    name = values.get("model", ModelConfig.model)
    known = set(setting_names(name))
    settings = model_settings(name, {k: v for k, v in values.items() if k in known})
    return dataclasses.replace(from_dict(ModelConfig, dict(values)), settings=settings)


__all__ = ["MODELS", "Batch", "ElboModel", "GuardState", "LossOutput", "QyQzModel", "SuslModel",
           "build_model", "model_class", "model_config_from_dict", "model_config_to_dict",
           "model_label", "model_settings", "model_title", "setting_names"]
