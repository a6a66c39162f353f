"""Reproducing the paper's tables: masks x models x seeds, trained, scored and summarised.

`table2` trains every (regime, model, seed) of {US, SS, SUS} x models x seeds on one dataset
(paper Table 2). `table1` trains M2 semi-supervised on the labelled classes only ("ss_known":
training and test sets restricted to those classes) against the same model on a SUS mask with
no extra components ("acc_sus", accidental SUS), both scored on test points of the labelled
classes (paper Table 1). Labelled classes are the first half of the classes, 20% of each.

Files under OUT (names are deterministic, so a partly finished grid resumes):

    OUT/<table>_<dataset>/mask_<kind>_seed<k>.h5        one mask per regime and mask seed
    OUT/<table>_<dataset>/<regime>_<model>_seed<k>.h5   one checkpoint per run
    OUT/<table>_<dataset>.csv, .md                      written by susl_cli.experiment_report

Seed k is both the mask seed and the training seed (US masks have no labels to draw: one mask,
seed 0). A finished checkpoint is skipped, an interrupted one resumed, a finished one with
fewer epochs than asked is extended with --resume (its cosine schedule then restarts, which
the CSV records). `jobs` > 1 trains in spawned worker processes with cores/jobs torch threads
each; on CUDA worker slot s trains on GPU s mod G, and `jobs` defaults to G
(susl_cli.placement). Library layer: no typer, no rich, prints nothing.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from susl_cli.config import (
    OBJECTIVE_SETTINGS,
    PAPER_PRESETS,
    TRAIN_SETTINGS,
    ModelConfig,
    split_settings,
)
from susl_cli.data.masking import DEFAULT_LABEL_FRACTION
from susl_cli.data.sources import (
    BUILTIN_DATASETS,
    DIGIT_NAMES,
    FASHION_NAMES,
    HAR_NAMES,
    USER_SUFFIXES,
)
from susl_cli.errors import ConfigError, TrainingError, UsageError
from susl_cli.experiment_masks import DatasetLoader, MaskSpec, prepare_masks
from susl_cli.experiment_runs import (
    ExperimentObserver,
    RunOutcome,
    RunSpec,
    RunTask,
    SilentExperimentObserver,
    check_run_settings,
    decide_action,
    execute_run,
    execute_tasks,
)
from susl_cli.models import MODELS, model_settings, setting_names
from susl_cli.placement import default_jobs, slot_devices
from susl_cli.runs import ModelOptions, model_options
from susl_cli.train import TrainingInterrupted

TABLES = ("table1", "table2")
TABLE_REGIMES = {"table1": ("ss_known", "acc_sus"), "table2": ("us", "ss", "sus")}
TABLE_MODELS = {"table1": ("m2",), "table2": ("m2", "gmdgm")}  # paper Table 1 is SSVAE only
# Which mask each regime trains on; acc_sus shares the SUS mask kind.
MASK_KIND = {"us": "us", "ss": "ss", "sus": "sus", "ss_known": "ss_known", "acc_sus": "sus"}
BUILTIN_N_CLASSES = {"mnist": len(DIGIT_NAMES), "fashion-mnist": len(FASHION_NAMES),
                     "har": len(HAR_NAMES), "har-features": len(HAR_NAMES)}
PRESETS = ("auto", "paper", "default")
# --set keys: ModelOptions fields and the registered models' settings (model options), and
# ObjectiveConfig and TrainConfig fields (training options), less those the grid itself sets.
OPTION_SETTINGS = tuple(f.name for f in dataclasses.fields(ModelOptions)
                        if f.name not in ("model", "settings"))
GRID_TRAIN_SETTINGS = tuple(k for k in OBJECTIVE_SETTINGS + TRAIN_SETTINGS
                            if k not in ("epochs", "seed"))


def model_setting_keys() -> tuple[str, ...]:
    """Every --set key that is a model option (read from the registry when asked)."""
    return tuple(dict.fromkeys(OPTION_SETTINGS + tuple(
        k for name in MODELS for k in setting_names(name))))
_GRID_FLAGS = {"model": "--models", "epochs": "--epochs", "seed": "--seeds"}


@dataclass(frozen=True)
class ExperimentConfig:
    """One paper table on one dataset. Validated on creation; CLI options map onto fields."""

    table: str                                   # "table1" or "table2"
    dataset: str                                 # built-in name or a user data file's path
    out_dir: Path                                # folder for masks, checkpoints and tables
    seeds: int = 4                               # runs per cell (the paper: 4); seeds 0..n-1
    epochs: int = 400                            # the paper trains up to 400 (appendix A)
    models: tuple[str, ...] = ()                 # empty: the table's models
    regimes: tuple[str, ...] = ()                # empty: the table's regimes
    label_fraction: float = DEFAULT_LABEL_FRACTION  # of each labelled class (paper: 0.2)
    labelled_classes: tuple[int, ...] = ()       # empty: the first half of the classes (paper)
    preset: str = "auto"                         # auto: Table A.1 sizes where the paper has them
    device: str = "auto"
    jobs: int | None = None                      # parallel processes; None: one per GPU on
                                                 # CUDA, else 1 (susl_cli.placement)
    settings: tuple[tuple[str, Any], ...] = ()   # --set KEY=VALUE model/training overrides
    data_dir: Path | None = None
    # Train the seeds of a cell as one batched model in one process (susl_cli/seed_batch.py).
    # Off by default: on CPU it measured 0.99x-1.14x against seeds one by one (README).
    batch_seeds: bool = False

    def __post_init__(self) -> None:
        if self.table not in TABLES:
            raise UsageError(f"unknown table {self.table!r}: choose table1 or table2")
        for name in ("seeds", "epochs", "jobs"):
            value = getattr(self, name)
            if name == "jobs" and value is None:  # chosen from the device when the grid runs
                continue
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"--{name} must be a positive integer, got {value!r}")
        _check_names(self.models, tuple(MODELS), "model", "--models")
        _check_names(self.regimes, TABLE_REGIMES[self.table], f"{self.table} regime",
                     "--regimes")
        if not math.isfinite(self.label_fraction) or not 0 < self.label_fraction <= 1:
            raise UsageError(f"--label-fraction must be in (0, 1], got {self.label_fraction}")
        if self.preset not in PRESETS:
            raise UsageError(f"unknown --preset {self.preset!r}: use auto, paper or default")
        _check_dataset(self.dataset)
        _check_settings(self)

    @property
    def model_names(self) -> tuple[str, ...]:
        return self.models or TABLE_MODELS[self.table]

    @property
    def regime_names(self) -> tuple[str, ...]:
        return self.regimes or TABLE_REGIMES[self.table]

    def slots(self) -> tuple[str, ...]:
        """Each worker slot's device (slot s -> cuda:{s % G} on G GPUs: susl_cli.placement);
        fails in one line when the asked device is missing."""
        jobs = self.jobs if self.jobs is not None else default_jobs(self.device)
        return slot_devices(self.device, jobs)

    @property
    def dataset_key(self) -> str:
        """The dataset's name in file names: the built-in name, or the user file's stem."""
        key = self.dataset.strip().lower()
        if key in BUILTIN_DATASETS:
            return key
        stem = Path(self.dataset).stem.lower()
        return "".join(c if c.isalnum() or c in "-." else "-" for c in stem) or "data"

    @property
    def name(self) -> str:
        return f"{self.table}_{self.dataset_key}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def preset_name(self) -> str | None:
        """The preset handed to training: 'paper' where Table A.1 has the dataset under auto."""
        if self.preset == "auto":
            return "paper" if self.dataset_key in PAPER_PRESETS else None
        return None if self.preset == "default" else self.preset

    @property
    def model_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.settings if k in model_setting_keys()}

    @property
    def train_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.settings if k in GRID_TRAIN_SETTINGS}


def _check_names(names: Sequence[str], allowed: Sequence[str], what: str, flag: str) -> None:
    for name in names:
        if name not in allowed:
            raise UsageError(f"unknown {what} {name!r} in {flag}: choose from "
                             f"{', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise UsageError(f"{flag} lists a name twice: {', '.join(names)}")


def _check_dataset(dataset: str) -> None:
    key = dataset.strip().lower()
    path = Path(dataset).expanduser()
    if key not in BUILTIN_DATASETS and path.suffix.lower() not in USER_SUFFIXES \
            and not path.exists():
        raise UsageError(f"unknown dataset {dataset!r}: choose one of "
                         f"{', '.join(BUILTIN_DATASETS)}, or give the path of a .npz, .csv or "
                         ".h5 file")


def _check_settings(config: ExperimentConfig) -> None:
    """Unknown keys, grid-owned keys and impossible values fail before any work."""
    for key, _ in config.settings:
        if key in _GRID_FLAGS:
            raise UsageError(f"--set {key}=... is set by the grid: use {_GRID_FLAGS[key]}")
        if key not in model_setting_keys() and key not in GRID_TRAIN_SETTINGS:
            raise UsageError(f"unknown --set key {key!r}: choose from "
                             f"{', '.join(sorted(model_setting_keys() + GRID_TRAIN_SETTINGS))}")
    if config.table == "table1" and "extra_components" in config.model_settings:
        raise UsageError("table1 fixes --extra-components at 0 (accidental SUS): drop it "
                         "from --set")
    try:
        split_settings({**config.train_settings, "epochs": config.epochs})
        for name in config.model_names:  # each model's settings dataclass checks its keys
            model_settings(name, model_options(config.model_settings).settings)
        ModelConfig(**{k: v for k, v in config.model_settings.items()
                       if k in {f.name for f in dataclasses.fields(ModelConfig)}})
    except TypeError as err:
        raise ConfigError(f"bad --set value: {err}") from None
    extra = config.model_settings.get("extra_components")
    if extra is not None and (not isinstance(extra, int) or extra < 0):
        raise ConfigError(f"--set extra_components must be an integer >= 0, got {extra!r}")


def parse_settings(items: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    """`KEY=VALUE` strings -> ((key, value), ...); values become int, float or stay text."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not text.strip():
            raise UsageError(f"--set expects KEY=VALUE (e.g. alpha=10), got {item!r}")
        parsed[key] = _parse_value(text.strip())
    return tuple(sorted(parsed.items()))


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_names(text: str | None, dash: str = "_") -> tuple[str, ...]:
    """'SS-known, acc-sus' -> lower-case names with `dash` for '-'; None -> (). Model names
    keep their hyphens (dash="-": 'm2,gmdgm-mf')."""
    if text is None:
        return ()
    return tuple(p.strip().lower().replace("-", dash) for p in text.split(",") if p.strip())


# --- the plan ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExperimentPlan:
    config: ExperimentConfig
    n_classes: int
    labelled_classes: tuple[int, ...]
    masks: tuple[MaskSpec, ...]
    runs: tuple[RunSpec, ...]


def first_half(n_classes: int) -> tuple[int, ...]:
    """The paper's labelled classes: {0..4} of 10, {0, 1, 2} of 6."""
    return tuple(range(n_classes // 2))


def plan_experiment(config: ExperimentConfig, n_classes: int) -> ExperimentPlan:
    """Every mask and run of the grid, in seed-major order, with deterministic file names."""
    labelled = config.labelled_classes or first_half(n_classes)
    if not labelled or len(labelled) >= n_classes or max(labelled) >= n_classes:
        raise UsageError(f"a {n_classes}-class dataset cannot have labelled classes "
                         f"{list(labelled)} with some hidden: it needs at least 2 classes")
    user_extra = config.model_settings.get("extra_components")
    folder = config.run_dir
    masks: dict[tuple[str, int], MaskSpec] = {}
    runs = []
    for seed in range(config.seeds):
        for regime in config.regime_names:
            kind = MASK_KIND[regime]
            mask_seed = 0 if kind == "us" else seed
            mask = masks.setdefault((kind, mask_seed), MaskSpec(
                kind, mask_seed, folder / f"mask_{kind}_seed{mask_seed}.h5"))
            extra = 0 if config.table == "table1" else (
                user_extra if regime in ("us", "sus") else None)
            score = labelled if regime == "acc_sus" else None
            for model in config.model_names:
                runs.append(RunSpec(regime, model, seed, mask,
                                    folder / f"{regime}_{model}_seed{seed}.h5", extra, score))
    return ExperimentPlan(config, n_classes, tuple(labelled), tuple(masks.values()), tuple(runs))


def make_tasks(plan: ExperimentPlan, mask_sha: Callable[[Path], str]) -> list[RunTask]:
    """One task per run; existing checkpoints are checked against the asked settings."""
    config = plan.config
    tasks = []
    for run in plan.runs:
        action = decide_action(run, config.epochs)
        if action != "train":
            check_run_settings(run.checkpoint, run.model, run.extra_components,
                               mask_sha(run.mask.path), config.train_settings,
                               config.model_settings)
        options = model_options({**config.model_settings, "model": run.model,
                                 "extra_components": run.extra_components})
        overrides = {**config.train_settings, "epochs": config.epochs, "seed": run.seed}
        tasks.append(RunTask(run, action, config.table, config.dataset_key, options,
                             tuple(sorted(overrides.items())), config.preset_name,
                             config.device))
    return tasks



# --- running the plan ---------------------------------------------------------------------------

@dataclass
class ExperimentResult:
    plan: ExperimentPlan
    outcomes: list[RunOutcome]
    rows: list[dict[str, Any]]        # one per run, in plan order
    wall_seconds: float
    slots: tuple[str, ...] = ()       # each worker slot's device; () : from the config


def run_experiment(config: ExperimentConfig,
                   observer: ExperimentObserver | None = None) -> ExperimentResult:
    """Make missing masks, train or resume every run, score them all (not the reports)."""
    observer = observer or SilentExperimentObserver()
    start = time.perf_counter()
    slots = config.slots()  # before any work: a missing GPU fails here, in one line
    loader = DatasetLoader(config.dataset, config.data_dir)
    n_classes = BUILTIN_N_CLASSES.get(config.dataset_key) or loader.get().n_classes
    plan = plan_experiment(config, n_classes)
    mask_sha = prepare_masks(plan.masks, plan.labelled_classes, n_classes,
                             config.label_fraction, loader)
    tasks = make_tasks(plan, mask_sha)
    observer.planned(len(tasks), sum(t.action != "skip" for t in tasks))
    try:
        outcomes = execute_tasks(tasks, slots, observer, config.batch_seeds)
    except TrainingInterrupted:
        raise TrainingInterrupted("interrupted: finished epochs are saved; rerun the same "
                                  "command to resume the grid") from None
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        details = "; ".join(f"{o.run.name}: {o.error}" for o in failed[:3])
        raise TrainingError(f"{len(failed)} of {len(outcomes)} runs failed ({details}); the "
                            "others are saved: fix the cause and rerun to finish the grid")
    order = {run.checkpoint: i for i, run in enumerate(plan.runs)}
    outcomes.sort(key=lambda o: order[o.run.checkpoint])
    rows = [o.row for o in outcomes if o.row is not None]
    return ExperimentResult(plan, outcomes, rows, time.perf_counter() - start, slots)


__all__ = [
    "ExperimentConfig", "ExperimentPlan", "ExperimentResult", "MaskSpec", "RunSpec", "RunTask",
    "RunOutcome", "execute_run", "make_tasks", "parse_names", "parse_settings", "plan_experiment",
    "run_experiment",
]
