"""Frozen, validated configuration. CLI options map one-to-one onto these fields.

Defaults are defined here and nowhere else. Where the paper is silent the choice is
documented next to the field (see also README "Choices where the paper is silent").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from susl_cli.errors import ConfigError

Likelihood = Literal["bernoulli", "gaussian"]
YEstimator = Literal["enumerate", "gumbel", "topk"]
KLMode = Literal["analytic", "sampled"]
Init = Literal["reference", "paper"]
InputFeatures = Literal["raw", "window-stats"]
# The names in a fixed order: checkpoints store a feature set by its index in this tuple.
INPUT_FEATURES: tuple[str, ...] = get_args(InputFeatures)


# sigma of the fixed-variance Gaussian likelihood on standardised data. Measured: sigma = 1e-30
# turns the first epoch's loss into inf/NaN (squared errors / sigma^2 overflow float32),
# 1e-8 still trains; the bounds leave a margin on both sides of any sensible value (~0.1-1).
GAUSSIAN_SIGMA_RANGE = (1e-6, 1e6)


# The smallest prior probability a component may get: float32 (the training precision) keeps
# its log finite (smaller values, e.g. from --labelled-mass 1e-300, round to 0 and give NaN).
PRIOR_MIN = 1e-30


@dataclass(frozen=True)
class NetworkSettings:
    """Settings every model shares; a model's own settings dataclass (declared in its file
    under susl_cli/models/) extends this one with fields of its own."""

    latent_dim: int = 5  # d_z (paper Table A.1: 5 MNIST, 10 Fashion-MNIST, 15 HAR)
    hidden_units: int = 200  # units in each of the two hidden layers

    def __post_init__(self) -> None:
        _positive(self, *(f.name for f in dataclasses.fields(self)
                          if f.type in (int, "int")))


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a model. `n_components` = K = n_labelled + extra components; `settings` the
    chosen model's own settings (its settings dataclass, a NetworkSettings)."""

    model: str = "gmdgm"
    input_dim: int = 784
    n_components: int = 10
    n_labelled: int = 0  # components 0..n_labelled-1 are tied, in order, to the labelled classes
    likelihood: Likelihood = "bernoulli"
    gaussian_sigma: float = 1.0  # fixed std of p(x|.) for real-valued (standardised) data
    # What the model sees: the raw values, or for time-series windows (channels x steps) their
    # summaries (susl_cli/window_features.py). Measured on UCI HAR (README "Choices").
    input_features: InputFeatures = "raw"
    # "reference": Glorot-normal hidden kernels, N(0, 0.001^2) output heads (the authors' code);
    # "paper": every kernel N(0, 0.001^2) as appendix A says.
    init: Init = "reference"
    # p(y): K probabilities; empty means uniform. Filled in by `class_prior` from the mask.
    prior: tuple[float, ...] = ()
    settings: NetworkSettings = field(default_factory=NetworkSettings)

    @property
    def latent_dim(self) -> int:
        return self.settings.latent_dim

    @property
    def hidden_units(self) -> int:
        return self.settings.hidden_units

    def __post_init__(self) -> None:
        _positive(self, "input_dim", "n_components")
        if not 0 <= self.n_labelled <= self.n_components:
            raise ConfigError(
                f"{self.n_components} components cannot hold {self.n_labelled} labelled classes: "
                "raise --extra-components or label fewer classes"
            )
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ConfigError(f"unknown likelihood {self.likelihood!r}: use bernoulli or gaussian")
        low, high = GAUSSIAN_SIGMA_RANGE
        if not low <= self.gaussian_sigma <= high:
            raise ConfigError(f"--gaussian-sigma must be in {low:g}..{high:g} (the data are "
                              f"standardised to sd 1; a much smaller sigma overflows float32), "
                              f"got {self.gaussian_sigma:g}")
        if self.input_features not in INPUT_FEATURES:
            raise ConfigError(f"unknown input features {self.input_features!r}: use "
                              f"{' or '.join(INPUT_FEATURES)}")
        if self.init not in ("reference", "paper"):
            raise ConfigError(f"unknown init {self.init!r}: use reference or paper")
        if self.prior:
            if len(self.prior) != self.n_components:
                raise ConfigError("the prior must have one probability per component")
            total = sum(self.prior)
            if any(p <= 0 for p in self.prior) or not math.isclose(total, 1, abs_tol=1e-6):
                raise ConfigError("the prior p(y) must be positive and sum to 1")
            if min(self.prior) < PRIOR_MIN:
                raise ConfigError(f"the prior gives a component probability {min(self.prior):g}, "
                                  f"below {PRIOR_MIN:g}: float32 rounds its log to -inf and "
                                  "training would end in NaN; check --labelled-mass")


@dataclass(frozen=True)
class ObjectiveConfig:
    """What the model minimises (paper eqs 6, 7, 11): owned by the model, which applies it in
    `model(batch)`. The optimiser and schedule live in TrainConfig."""

    # Weight of the labelled cross-entropy relative to the per-example ELBO. The paper only
    # says "a factor alpha"; the reference code ran 0.5. Measured on MNIST SUS (README
    # "Choices"): 50 starves the extra components (5 of 45 used), 0.5 keeps them alive.
    alpha: float = 0.5
    y_estimator: YEstimator = "enumerate"
    gumbel_temperature: float = 0.5
    # "topk": how many of q(y|x)'s most probable components are summed exactly (one more is
    # drawn from the rest). 4 of MNIST's 45: the decoder runs on 5 label settings, not 45.
    y_topk: int = 4
    kl: KLMode = "analytic"  # same objective as one-sample MC, lower variance
    # Extra weight on KL(mean_batch q(y|x) || p(y)), the part of the ELBO's KL(q(y|x) || p(y))
    # that ties the aggregate posterior to the prior. 0 = the paper's objective exactly.
    marginal_kl: float = 0.0
    # Act on the merge signal (susl_cli/share_guard.py): while a labelled component holds more
    # than this multiple of its prior share of the training points, a penalty with a growing
    # multiplier pushes unlabelled mass out of it to the extra components. 0 = off, the
    # default: measured on a 3,000-row MNIST slice (6 epochs) a cap of 1.15 cost labelled-class
    # accuracy (0.86 -> 0.00), because early in training labelled components hold nearly
    # everything; on a synthetic look-alike set it undoes a merge (tests/test_share_guard.py).
    labelled_share_cap: float = 0.0
    # Weight of the known/new cross-entropy (losses.known_cross_entropy) whose per-row targets
    # come from the labelled rows themselves (susl_cli/label_evidence.py): a row the labels
    # call new is pushed out of the labelled components. 0 = off.
    label_evidence: float = 0.0

    def __post_init__(self) -> None:
        if not self.gumbel_temperature > 0:
            raise ConfigError("--gumbel-temperature must be > 0")
        for name in ("alpha", "marginal_kl", "label_evidence"):
            if getattr(self, name) < 0 or not math.isfinite(getattr(self, name)):
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
        if self.labelled_share_cap != 0 and not (1 < self.labelled_share_cap < math.inf):
            raise ConfigError(f"--labelled-share-cap must be 0 (off) or a ratio > 1, got "
                              f"{self.labelled_share_cap}")
        if self.y_estimator not in get_args(YEstimator):
            raise ConfigError(f"unknown --y-estimator {self.y_estimator!r}: enumerate, gumbel "
                              "or topk")
        if not (isinstance(self.y_topk, int) and self.y_topk >= 1):
            raise ConfigError(f"--y-topk must be a whole number >= 1, got {self.y_topk}")
        if self.kl not in ("analytic", "sampled"):
            raise ConfigError(f"unknown --kl {self.kl!r}: analytic or sampled")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is fitted: optimiser, batches, schedule, seed, checkpoints (paper appendix
    A; reference-code values where it is silent). The objective is ObjectiveConfig."""

    epochs: int = 400
    batch_size: int = 100  # unlabelled points per step (Table A.1's "4" for MNIST reads as a typo)
    labelled_batch_size: int = 100  # labelled points per step; the small labelled set is cycled
    learning_rate: float = 1e-3
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = 0.0  # elementwise clip of gradients to [-c, c]; 0 disables
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 1  # at least this many epochs between checkpoint writes
    # ... and at least this many seconds (0: every `checkpoint_every` epochs). The last epoch
    # and Ctrl-C always write. 100 small epochs (wine) took 6.4 s to train and 38.6 s with a
    # write per epoch; 30 s bounds what a kill can lose to 30 s of training plus one epoch.
    checkpoint_seconds: float = 30.0
    # Epoch at which the current cosine cycle began: 0, or the epoch a finished run was
    # extended from (`--resume --epochs N`: a warm restart, see `scheduled_lr`).
    lr_cycle_start: int = 0

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "labelled_batch_size", "checkpoint_every")
        if not (math.isfinite(self.checkpoint_seconds) and self.checkpoint_seconds >= 0):
            raise ConfigError(f"--checkpoint-seconds must be >= 0, got {self.checkpoint_seconds}")
        if not 0 <= self.lr_cycle_start < self.epochs:
            raise ConfigError(f"the learning-rate cycle must start within the run: "
                              f"{self.lr_cycle_start} is not in 0..{self.epochs - 1}")
        if not self.learning_rate > 0:
            raise ConfigError("--learning-rate must be > 0")
        for name in ("grad_clip", "weight_decay"):
            if getattr(self, name) < 0 or not math.isfinite(getattr(self, name)):
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"unknown schedule {self.lr_schedule!r}: cosine or constant")


OBJECTIVE_SETTINGS = tuple(f.name for f in dataclasses.fields(ObjectiveConfig))
TRAIN_SETTINGS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def split_settings(values: dict[str, Any]) -> tuple[ObjectiveConfig, TrainConfig]:
    """One flat dict of training settings (the CLI's flags, `experiment --set`) -> (objective,
    optimiser/schedule config); an unknown key fails in one line."""
    unknown = sorted(set(values) - set(OBJECTIVE_SETTINGS) - set(TRAIN_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown training setting {unknown[0]!r}: choose from "
                          f"{', '.join(sorted(OBJECTIVE_SETTINGS + TRAIN_SETTINGS))}")
    return from_dict(ObjectiveConfig, values), from_dict(TrainConfig, values)


@dataclass(frozen=True)
class Preset:
    """Per-dataset values of paper Table A.1."""

    latent_dim: int
    hidden_units: int
    batch_size: int
    learning_rate: float
    gaussian_sigma: float = 1.0
    notes: str = ""


# Table A.1. MNIST's printed batch size of 4 is read as a typo: the reference code used 100.
PAPER_PRESETS: dict[str, Preset] = {
    "mnist": Preset(5, 200, 100, 1e-3, notes="batch 100 (Table A.1 prints 4)"),
    "fashion-mnist": Preset(10, 500, 64, 1.5e-3),
    "har": Preset(15, 500, 64, 5e-3),
}


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or value <= 0:
            flag = name.replace("_", "-")
            raise ConfigError(f"--{flag} must be a positive integer, got {value!r}")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a config from stored values, ignoring unknown keys from newer files."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names}
    return cls(**kwargs)


__all__ = ["ModelConfig", "NetworkSettings", "ObjectiveConfig", "TrainConfig", "split_settings",
           "Preset", "PAPER_PRESETS", "to_dict", "from_dict"]
