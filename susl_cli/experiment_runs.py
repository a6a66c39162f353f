"""Running the experiment grid: its runs (`RunSpec`; the masks are experiment_masks.py's),
the checks on existing checkpoints, training each run (here or in spawned worker processes)
and scoring it.

Library layer: no CLI imports, prints nothing. susl_cli.experiment plans (and imports this
module); this module runs and never imports the planner, so the two form no import circle.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from susl_cli.cpu_tuning import tune_cpu
from susl_cli.errors import ConfigError, DataError, SuslError
from susl_cli.evaluate import evaluate_checkpoint, predict_probs
from susl_cli.experiment_masks import MaskSpec
from susl_cli.metrics import SUMMARY_FIELDS, Metrics, evaluate_assignments
from susl_cli.runs import ModelOptions, Run, load_model, resolve_device
from susl_cli.seed_batch import SeedJob, train_seeds
from susl_cli.storage.checkpoint import read_checkpoint_meta
from susl_cli.storage.masked import read_masked_dataset
from susl_cli.train import TrainingInterrupted, cosine_lr, train_mask_file

# --- the runs of a plan -------------------------------------------------------------------------

@dataclass(frozen=True)
class RunSpec:
    """One training run and how it is scored."""

    regime: str                                # us, ss, sus, ss_known or acc_sus
    model: str
    seed: int
    mask: MaskSpec
    checkpoint: Path
    extra_components: int | None               # None: 40 with hidden classes, else 0
    score_classes: tuple[int, ...] | None      # score only test points of these classes

    @property
    def name(self) -> str:
        return self.checkpoint.stem


def check_run_settings(checkpoint: Path, model: str, extra_components: int | None,
                       mask_sha: str, train_settings: dict[str, Any],
                       model_settings: dict[str, Any]) -> None:
    """Refuse to skip or resume a checkpoint made with other settings than those asked."""
    meta = read_checkpoint_meta(checkpoint)
    mc = meta.get("model_config", {})
    stored = {**mc, **meta.get("train_config", {}), **meta.get("objective_config", {}),
              "model": meta.get("model")}
    if "n_components" in mc:
        stored["extra_components"] = int(mc["n_components"]) - int(mc.get("n_labelled", 0))
    asked: dict[str, Any] = {**train_settings, "model": model}
    asked.pop("checkpoint_every", None)  # may change between runs, as with --resume
    # model options stored under the same name in the model config (the model's settings
    # dataclass and the shared fields; extra_components is compared below)
    asked.update({k: v for k, v in model_settings.items() if k in mc})
    if extra_components is not None:
        asked["extra_components"] = extra_components
    for key, value in sorted(asked.items()):
        if stored.get(key) != value:
            raise ConfigError(f"{str(checkpoint)!r} was trained with {key}={stored.get(key)!r},"
                              f" this experiment asks {key}={value!r}: use another --out, or "
                              "delete that checkpoint to retrain it")
    if meta.get("mask_sha256") != mask_sha:
        raise ConfigError(f"{str(checkpoint)!r} was trained on another mask than "
                          f"{meta.get('mask_file')!r} holds now: delete it to retrain it")


def score_checkpoint(checkpoint: Path, mask: Path, classes: tuple[int, ...] | None,
                     device: str = "cpu") -> tuple[Run, Metrics]:
    """Score on the mask's test set, or only on its points of `classes` (paper Table 1).

    The majority and Hungarian mappings are fitted on the scored test points: the paper's
    protocol.
    """
    if classes is None:
        evaluation = evaluate_checkpoint(checkpoint, mask, fit_mapping="test", device=device)
        return evaluation.run, evaluation.metrics
    run = load_model(checkpoint, resolve_device(device))
    masked = read_masked_dataset(mask)
    if masked.x_test is None or masked.y_test is None:
        raise DataError(f"{str(mask)!r} has no test set to score")
    keep = np.isin(masked.y_test, classes)
    if not keep.any():
        raise DataError(f"{str(mask)!r} has no test points of classes {list(classes)}")
    probs = predict_probs(run, masked.x_test[keep])  # (M, K)
    metrics = evaluate_assignments(
        probs.argmax(-1), masked.y_test[keep], n_components=run.model_config.n_components,
        n_classes=masked.n_classes, labelled_classes=run.meta.labelled_classes)
    return run, metrics


def schedule_as_planned(run: Run) -> bool:
    """Whether every epoch's learning rate is the one the run's final schedule gives it.

    False for a finished run extended to more epochs (its cosine decay restarted) or a run
    resumed with another epoch count.
    """
    config = run.train_config
    lrs = run.history.get("lr", [])
    if len(lrs) != run.epoch:
        return False
    return all(math.isclose(lr, cosine_lr(config.learning_rate, e, config.epochs,
                                          config.lr_schedule), rel_tol=1e-6, abs_tol=1e-12)
               for e, lr in enumerate(lrs))


# --- running the runs ---------------------------------------------------------------------------

ACTIONS = ("train", "resume", "extend", "skip")


@dataclass(frozen=True)
class RunTask:
    """What a worker needs to train (if need be) and score one run. Picklable."""

    run: RunSpec
    action: str                       # one of ACTIONS
    table: str
    dataset: str
    options: ModelOptions
    overrides: tuple[tuple[str, Any], ...]   # TrainConfig fields, epochs and seed included
    preset: str | None
    device: str


@dataclass(frozen=True)
class RunOutcome:
    run: RunSpec
    action: str
    row: dict[str, Any] | None        # the CSV row; None when the run failed
    error: str | None
    seconds: float


class ExperimentObserver(Protocol):
    """What the grid reports; the CLI draws it."""

    def planned(self, total: int, to_train: int) -> None: ...
    def run_finished(self, outcome: RunOutcome) -> None: ...


class SilentExperimentObserver:
    def planned(self, total: int, to_train: int) -> None:
        pass

    def run_finished(self, outcome: RunOutcome) -> None:
        pass


def decide_action(run: RunSpec, epochs: int) -> str:
    """train (no checkpoint), skip (finished with >= epochs), resume (interrupted) or extend
    (finished with fewer epochs than asked)."""
    if not run.checkpoint.exists():
        return "train"
    meta = read_checkpoint_meta(run.checkpoint)
    done, planned = int(meta["epoch"]), int(meta["train_config"]["epochs"])
    if meta.get("completed"):
        return "skip" if done >= epochs else "extend"
    if done >= epochs:
        raise ConfigError(f"{str(run.checkpoint)!r} stopped after {done} of {planned} epochs: "
                          f"ask --epochs {planned} to finish it, or use another --out")
    return "resume"


def execute_run(task: RunTask) -> RunOutcome:
    """Train (or resume, or skip) one run, then score it. Runs in a worker process too.

    Domain errors come back in the outcome so that the other runs go on; Ctrl-C
    (TrainingInterrupted, raised after the last finished epoch is saved) stops the grid.
    """
    run = task.run
    start = time.perf_counter()
    try:
        if task.action != "skip":
            train_mask_file(run.mask.path, run.checkpoint, options=task.options,
                            train_overrides=dict(task.overrides), preset=task.preset,
                            device=task.device, resume=task.action in ("resume", "extend"))
        trained, metrics = score_checkpoint(run.checkpoint, run.mask.path, run.score_classes,
                                            task.device)
    except TrainingInterrupted:
        raise
    except SuslError as err:
        return RunOutcome(run, task.action, None, str(err), time.perf_counter() - start)
    row: dict[str, Any] = {
        "table": task.table, "dataset": task.dataset, "model": run.model,
        "regime": run.regime, "seed": run.seed, "mask_seed": run.mask.seed,
        "epochs": trained.epoch, "completed": bool(trained.meta.completed),
        "lr_schedule_as_planned": schedule_as_planned(trained),
        "train_seconds": round(float(sum(trained.history.get("seconds", []))), 2),
        "device": task.device,  # where this invocation trained it (a finished run: scored it)
        "n_components": trained.model_config.n_components, "n_points": metrics.n_points,
        "mapping_fit": metrics.mapping_fit,
        **{name: getattr(metrics, name) for name in SUMMARY_FIELDS},
        "checkpoint": str(run.checkpoint), "mask": str(run.mask.path),
    }
    return RunOutcome(run, task.action, row, None, time.perf_counter() - start)


def worker_threads(jobs: int) -> int:
    """Torch threads per worker process: the usable cores shared out, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // jobs)


# This worker's device, taken from the slot queue once when the worker starts (a Pool worker
# runs its initializer and its tasks in one thread; thread-local so that a thread pool standing
# in for processes in the tests gives each thread a slot of its own too).
_slot = threading.local()


def _init_worker(threads: int, slots: Any) -> None:
    torch.set_num_threads(threads)
    tune_cpu()  # this process is the grid's own: the CPU settings `susl train` makes
    try:
        _slot.device = slots.get(timeout=60)  # each worker takes one slot's device for life
    except queue.Empty:  # a worker replacing a dead one: its tasks keep the asked device
        pass


def _execute_in_slot(task: RunTask) -> RunOutcome:
    """execute_run on this worker's device (susl_cli.placement: slot s -> cuda:{s % G})."""
    device = getattr(_slot, "device", task.device)
    if device.startswith("cuda:"):
        torch.cuda.set_device(device)  # anything made on plain "cuda" lands on this GPU too
    return execute_run(replace(task, device=device))


def seed_groups(tasks: Sequence[RunTask], batch_seeds: bool) -> list[tuple[RunTask, ...]]:
    """The units of work: each task alone, or with `batch_seeds` the runs to train that differ
    in their seed only (a cell's seeds: same regime, model, settings and action) as one."""
    units: dict[Any, list[RunTask]] = {}
    for i, task in enumerate(tasks):
        key: Any = i
        if batch_seeds and task.action != "skip":
            key = (task.run.regime, task.run.model, task.action, repr(task.options),
                   tuple(kv for kv in task.overrides if kv[0] != "seed"), task.preset)
        units.setdefault(key, []).append(task)
    return [tuple(unit) for unit in units.values()]


def execute_seed_group(tasks: Sequence[RunTask]) -> list[RunOutcome]:
    """Train a cell's seeds together (susl_cli/seed_batch.py), then score each; on a domain
    error every run is tried on its own, so that each outcome carries its own error."""
    if len(tasks) == 1:
        return [execute_run(tasks[0])]
    start = time.perf_counter()
    first = tasks[0]
    jobs = [SeedJob(t.run.mask.path, t.run.checkpoint, dict(t.overrides),
                    t.action in ("resume", "extend")) for t in tasks]
    try:
        train_seeds(jobs, options=first.options, preset=first.preset, device=first.device)
    except TrainingInterrupted:
        raise
    except SuslError:
        return [execute_run(task) for task in tasks]
    shared = (time.perf_counter() - start) / len(tasks)  # the training, shared out
    outcomes = []
    for task in tasks:
        scored = execute_run(replace(task, action="skip"))
        outcomes.append(replace(scored, action=task.action, seconds=scored.seconds + shared))
    return outcomes


def _execute_unit_in_slot(unit: tuple[RunTask, ...]) -> list[RunOutcome]:
    """A unit of work (`seed_groups`) on this worker's device."""
    if len(unit) == 1:
        return [_execute_in_slot(unit[0])]
    device = getattr(_slot, "device", unit[0].device)
    if device.startswith("cuda:"):
        torch.cuda.set_device(device)
    return execute_seed_group([replace(t, device=device) for t in unit])


def execute_tasks(tasks: Sequence[RunTask], slots: Sequence[str],
                  observer: ExperimentObserver, batch_seeds: bool = False) -> list[RunOutcome]:
    """Run every task: finished runs (only scored) here, the others here too with one slot,
    else in one spawned worker process per slot, each on its slot's device. With
    `batch_seeds` a cell's seeds train together, as one unit of work (`seed_groups`)."""
    jobs = len(slots)
    outcomes = []
    units = seed_groups(tasks, batch_seeds)
    local = [u for u in units if u[0].action == "skip" or jobs == 1]
    pooled = [u for u in units if u[0].action != "skip" and jobs > 1]
    if len(pooled) == 1:
        local, pooled = [*local, *pooled], []
    for unit in local:  # this process works as slot 0
        for outcome in execute_seed_group([replace(t, device=slots[0]) for t in unit]):
            outcomes.append(outcome)
            observer.run_finished(outcome)
    if not pooled:
        return outcomes
    context = multiprocessing.get_context("spawn")  # fork is unsafe with torch threads / CUDA
    workers = min(jobs, len(pooled))
    free = context.Queue()  # the slots' devices, one taken by each worker as it starts
    for device in slots[:workers]:
        free.put(device)
    with context.Pool(workers, initializer=_init_worker,
                      initargs=(worker_threads(jobs), free)) as pool:
        for unit_outcomes in pool.imap_unordered(_execute_unit_in_slot, pooled):
            for outcome in unit_outcomes:
                outcomes.append(outcome)
                observer.run_finished(outcome)
    return outcomes
