"""A training run's state: building it from a mask file, saving and restoring it.

A run is (configs, input transform, model, optimizer, history, mask identity). Checkpoints
hold all of it as plain arrays, so an interrupted run resumes exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from susl_cli import __version__
from susl_cli.config import ModelConfig, ObjectiveConfig, TrainConfig, from_dict, to_dict
from susl_cli.errors import ConfigError, DataError, DeviceError, FileFormatError, UsageError
from susl_cli.models import (
    build_model,
    model_config_from_dict,
    model_config_to_dict,
    model_settings,
)
from susl_cli.models.base import SuslModel
from susl_cli.objective import (
    as_given_labelled_mass,
    class_prior,
    default_extra_components,
    estimate_labelled_mass,
)
from susl_cli.preprocess import InputTransform, fit_transform
from susl_cli.resources import check_components_fit, check_model_fits
from susl_cli.run_meta import RunMeta
from susl_cli.storage.checkpoint import CheckpointData, read_checkpoint, write_checkpoint
from susl_cli.storage.files import check_regular_file
from susl_cli.storage.masked import MaskedDataset, file_sha256


@dataclass(frozen=True)
class ModelOptions:
    """What a user may choose about the model before the data fixes its dimensions.

    None means "the ModelConfig default"; `extra_components` None means 40 when some class
    has no labels and 0 otherwise; `likelihood` None means from the data (images: Bernoulli).
    `settings`: the model's own settings the user set (KEY -> value, e.g. latent_dim), checked
    against the chosen model's settings dataclass (susl_cli/models/__init__.py).
    """

    model: str | None = None  # None: ModelConfig's default (gmdgm), or the resumed run's
    extra_components: int | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    likelihood: str | None = None
    gaussian_sigma: float | None = None
    input_features: str | None = None
    init: str | None = None
    labelled_mass: float | None = None


def parse_model_options(items: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` strings (`--model-option`) -> {key: text}; the model's settings dataclass
    converts and checks them (susl_cli.models.model_settings)."""
    parsed = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not text.strip():
            raise UsageError(f"--model-option expects KEY=VALUE (e.g. latent_dim=10), got "
                             f"{item!r}")
        parsed[key] = text.strip()
    return parsed


def model_options(values: Mapping[str, Any]) -> ModelOptions:
    """ModelOptions from one flat dict (`experiment --set`): ModelOptions' own fields, and the
    model's settings (latent_dim, ...) for every other key."""
    own = {f.name for f in dataclasses.fields(ModelOptions)} - {"settings"}
    return ModelOptions(**{k: v for k, v in values.items() if k in own},
                        settings={k: v for k, v in values.items() if k not in own})


@dataclass
class Run:
    """Everything a training loop needs; `epoch` counts completed epochs."""

    model_config: ModelConfig
    train_config: TrainConfig
    transform: InputTransform
    model: SuslModel
    optimizer: torch.optim.Optimizer
    meta: RunMeta
    epoch: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """auto -> CUDA when available, else CPU; an explicit CUDA request must be satisfiable."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but no CUDA GPU is available: "
                          "use --device cpu or --device auto")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {name!r} cannot train or run a model here: use auto, cpu, "
                          "cuda or cuda:N")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"--device {name} asks for GPU {device.index}, but this machine has "
                          f"{torch.cuda.device_count()}: use cuda:0..cuda:"
                          f"{torch.cuda.device_count() - 1}")
    return device


def make_model_config(masked: MaskedDataset, transform_dim: int, options: ModelOptions,
                      likelihood: str) -> ModelConfig:
    """Fix K, the prior and the input size from the mask; the rest from the user's options."""
    meta = masked.metadata
    labelled = masked.labelled_classes
    extra = options.extra_components
    as_given = meta.label_source == "as-given"
    if extra is None:
        # labels as given: nothing says every class was labelled, so leave room for new ones
        extra = default_extra_components(len(labelled), masked.n_classes + as_given)
    if extra < 0:
        raise ConfigError(f"--extra-components must be >= 0, got {extra}")
    if len(labelled) + extra == 0:
        raise ConfigError("no labelled classes and no extra components: give "
                          "--extra-components N (N > 0) to cluster unlabelled data")
    settings = model_settings(options.model or ModelConfig.model, options.settings)
    # before the prior (one float per component) is built: K = 10^9 would exhaust memory here
    check_components_fit(len(labelled) + extra, settings.hidden_units)
    counts = np.asarray([meta.labelled_counts[c] for c in labelled], dtype=float)
    mass = options.labelled_mass
    if mass is None and len(labelled) and extra:
        mass = (as_given_labelled_mass(counts, len(masked.y_observed)) if as_given else
                estimate_labelled_mass(counts, meta.label_fraction, len(masked.y_observed),
                                       masked.n_classes))
    chosen = {k: v for k, v in dataclasses.asdict(options).items()
              if v is not None and k in {f.name for f in dataclasses.fields(ModelConfig)}}
    chosen["likelihood"] = likelihood
    return ModelConfig(**{**chosen, "settings": settings, "input_dim": transform_dim,
                          "n_components": len(labelled) + extra, "n_labelled": len(labelled),
                          "prior": class_prior(counts, extra, mass)})


def new_run(masked: MaskedDataset, mask_path: Path, options: ModelOptions,
            train_config: TrainConfig, device: torch.device,
            objective: ObjectiveConfig | None = None) -> Run:
    """Build a fresh, seeded run for a mask file; the model owns `objective`."""
    likelihood = options.likelihood or ("bernoulli" if masked.input_kind == "image" else "gaussian")
    # the representation: this command's choice, else the one recorded at mask time
    features = options.input_features or masked.metadata.input_features or "raw"
    options = dataclasses.replace(options, input_features=features)
    transform = fit_transform(masked.x_train, likelihood, features)
    model_config = make_model_config(masked, transform.output_dim, options, likelihood)
    n = len(masked.y_observed)  # a batch larger than the data is the whole data
    check_model_fits(model_config, device, training=True,
                     batch_rows=min(train_config.batch_size, n)
                     + min(train_config.labelled_batch_size, n))
    model = build_model(model_config, objective)
    model_config = model.config  # its settings as the model's own settings dataclass
    # its own generator: seeded, and safe when several threads build runs at once
    model.reset_parameters(torch.Generator().manual_seed(train_config.seed))
    model.to(device)
    meta = RunMeta(
        model=model_config.model,
        mask_sha256=file_sha256(mask_path),
        mask_file=str(Path(mask_path).resolve()),
        dataset=masked.metadata.dataset,
        regime=masked.metadata.regime,
        label_source=masked.metadata.label_source,
        class_names=list(masked.class_names),
        n_classes=masked.n_classes,
        labelled_classes=list(masked.labelled_classes),
        hidden_classes=list(masked.hidden_classes),
        input_kind=masked.input_kind,
        seed=train_config.seed,
        susl_version=__version__,
    )
    return Run(model_config, train_config, transform, model, make_optimizer(model, train_config),
               meta)


def run_mask_file(run: Run, checkpoint: Path, data: Path | None = None, *,
                  option: str = "--data") -> tuple[Path, str]:
    """The mask file a command reads for `checkpoint`, and its sha256.

    `data` (a user's explicit choice, e.g. `--data`) may be any mask file; without it the run's
    own mask file is used, and it must still be the file the run was trained on: a mask
    replaced since training would be scored (or sampled, or predicted from) silently.
    Every command that reads a run's mask goes through here.
    """
    path = Path(data) if data is not None else Path(run.meta.mask_file)
    if not path.exists():
        raise FileFormatError(
            f"the mask file {str(path)!r} that {str(checkpoint)!r} was trained on is not there: "
            f"pass {option} MASK.h5"
        )
    check_regular_file(path, FileFormatError, "mask file")  # a FIFO would hang the hash
    sha = file_sha256(path)
    if data is None:
        check_run_mask(run, checkpoint, path, sha, option=option)
    return path, sha


def check_run_mask(run: Run, checkpoint: Path, path: Path, sha: str | None = None, *,
                   option: str = "--data") -> None:
    """Refuse a mask file whose bytes differ from those `checkpoint` was trained on."""
    check_regular_file(path, FileFormatError, "mask file")
    if (sha or file_sha256(path)) != run.meta.mask_sha256:
        raise DataError(
            f"{str(path)!r} is not the mask file {str(checkpoint)!r} was trained on (its sha256 "
            "differs: it was replaced or changed since training): restore that file, or pass "
            f"{option} with the run's own mask file"
        )


def make_optimizer(model: SuslModel, config: TrainConfig) -> torch.optim.Optimizer:
    # Fused Adam: one kernel per step on CPU and CUDA instead of ~10 small ops per parameter.
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters())
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate,
                            weight_decay=config.weight_decay, fused=fused)


def save_run(run: Run, path: Path, completed: bool) -> None:
    meta = {**run.meta.to_dict(), "epoch": run.epoch, "completed": completed,
            "model_config": model_config_to_dict(run.model_config),
            "objective_config": to_dict(run.model.objective),
            "train_config": to_dict(run.train_config)}
    write_checkpoint(path, CheckpointData(
        meta=meta,
        weights={k: v.detach().cpu().numpy() for k, v in run.model.state_dict().items()},
        optimizer=_flatten_optimizer(run.optimizer),
        history={k: np.asarray(v, dtype=np.float64) for k, v in run.history.items()},
        transform=run.transform.to_arrays(),
    ), overwrite=True, may_replace_input=True)  # a resumed run read this file: its own
    # The run in memory says what its file says: a resumed run loaded "completed": False, and
    # a later save without `completed` (store_discovery) must not mark its finished file
    # interrupted again.
    run.meta.completed = completed


def load_model(path: Path, device: torch.device | str = "cpu",
               with_optimizer: bool = False) -> Run:
    """Rebuild a run (model in eval mode) from a checkpoint file."""
    data = read_checkpoint(path, with_optimizer=with_optimizer)
    try:
        model_config = model_config_from_dict(data.meta["model_config"])
        train_config = from_dict(TrainConfig, data.meta["train_config"])
        # files written before the objective had its own config hold it in train_config
        objective = from_dict(ObjectiveConfig, data.meta.get("objective_config")
                              or data.meta["train_config"])
        check_model_fits(model_config, "cpu", training=False, source=str(path))
        model = build_model(model_config, objective)
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in data.weights.items()}
        model.load_state_dict(state)
        transform = InputTransform.from_arrays(data.transform)
        epoch = int(data.meta["epoch"])
        meta = RunMeta.from_dict(data.meta)
        history = {k: [float(x) for x in v] for k, v in data.history.items()}
    except (KeyError, RuntimeError, TypeError, ValueError, IndexError) as err:
        detail = " ".join(str(err).split())[:200]
        raise FileFormatError(f"{str(path)!r} is not a complete susl checkpoint ({detail}): "
                              "retrain or resume it") from None
    model.to(device).eval()
    optimizer = make_optimizer(model, train_config)
    if with_optimizer and data.optimizer:
        try:
            optimizer.load_state_dict(_unflatten_optimizer(data.optimizer, optimizer, device))
        except (KeyError, RuntimeError, TypeError, ValueError, IndexError) as err:
            detail = " ".join(str(err).split())[:200]
            raise FileFormatError(f"{str(path)!r} holds a damaged optimizer state ({detail}): "
                                  "start a new run with --overwrite") from None
    return Run(model_config, train_config, transform, model, optimizer, meta, epoch, history)


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    flat = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            flat[f"{index}/{key}"] = torch.as_tensor(value).detach().cpu().numpy()
    return flat


def _unflatten_optimizer(flat: dict[str, np.ndarray], optimizer: torch.optim.Optimizer,
                         device: torch.device | str) -> dict[str, Any]:
    """The fresh optimizer's own param groups, with the stored per-parameter state."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    shapes = [tuple(p.shape) for group in optimizer.param_groups for p in group["params"]]
    for name, value in flat.items():
        index, key = name.split("/", 1)
        tensor = torch.from_numpy(np.asarray(value))
        # torch does not check these shapes: a wrong one would silently corrupt the next steps
        expected = () if key == "step" else shapes[int(index)]
        if tuple(tensor.shape) != expected or not tensor.dtype.is_floating_point:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {expected}")
        # Adam keeps `step` on the CPU; the moment estimates live with the parameters.
        state.setdefault(int(index), {})[key] = tensor if key == "step" else tensor.to(device)
    return {**optimizer.state_dict(), "state": state}
