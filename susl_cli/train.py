"""Fitting a run: minibatch loop, learning-rate schedule, checkpoints, resume, interrupts.

Each step is `model(Batch(...))` (batches: susl_cli/training_data.py). Randomness for epoch e
comes from a generator seeded with (seed, e), so a run resumed at an epoch boundary draws
exactly what an uninterrupted run would have drawn.

This module never reads test labels or the evaluation-only true labels of training points.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path
from typing import Protocol

import torch

from susl_cli.config import TrainConfig
from susl_cli.diagnostics import (
    assignment_counts,
    components_used,
    labelled_accuracy,
    largest_labelled_share_ratio,
)
from susl_cli.discover import DiscoveryOptions
from susl_cli.discovery_runs import discover_run, store_discovery
from susl_cli.distributed import (
    SINGLE,
    PeerFailure,
    World,
    agree,
    barrier,
    check_batch_sizes,
    is_peer_failure,
    peer_lost_text,
    training_device,
    wrap,
)
from susl_cli.errors import OutputError, SuslError, TrainingError
from susl_cli.models import Batch, GuardState
from susl_cli.run_setup import prepare_run
from susl_cli.runs import ModelOptions, Run, resolve_device, save_run
from susl_cli.share_guard import WARMUP_EPOCHS, ShareGuard
from susl_cli.training_data import (
    TrainingData,
    batch_indices,
    maybe_binarise,
    prepare_data,
    shard_batch,
)
from susl_cli.training_log import history_csv_path, write_history_csv

EPOCH_SEED_STRIDE = 1_000_003  # distinct generator seeds per (seed, epoch)


class TrainingInterrupted(SuslError):
    """Ctrl-C: the last finished epoch is on disk; the message says how to resume."""

    exit_code = 130


class Observer(Protocol):
    """What the trainer reports; the CLI draws it, tests can record it."""

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None: ...
    def steps_done(self, n: int) -> None: ...
    def running_loss(self, loss: float) -> None: ...  # mean loss of the epoch so far
    def epoch_finished(self, record: dict[str, float]) -> None: ...


class SilentObserver:
    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def steps_done(self, n: int) -> None:
        pass

    def running_loss(self, loss: float) -> None:
        pass

    def epoch_finished(self, record: dict[str, float]) -> None:
        pass


RUNNING_LOSS_SECONDS = 1.0  # how often the epoch's running loss is reported (one device sync)


def cosine_lr(base_lr: float, epoch: int, epochs: int, schedule: str) -> float:
    """Learning rate for 0-based `epoch`: cosine decay from base_lr towards 0 over the run."""
    if schedule == "constant":
        return base_lr
    return 0.5 * base_lr * (1 + math.cos(math.pi * epoch / epochs))


def scheduled_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of 0-based `epoch`, warm restarts included.

    Epochs before `lr_cycle_start` followed one cosine over `lr_cycle_start` epochs (the run as
    first finished); from it on, a new cosine runs from the base rate to 0 over the remaining
    epochs (SGDR's warm restart: a finished run extended with `--resume --epochs N`).
    """
    start = config.lr_cycle_start
    if epoch < start:
        return cosine_lr(config.learning_rate, epoch, start, config.lr_schedule)
    return cosine_lr(config.learning_rate, epoch - start, config.epochs - start,
                     config.lr_schedule)


def fit(run: Run, data: TrainingData, out_path: Path | None = None,
        observer: Observer | None = None, world: World = SINGLE) -> Run:
    """Train from `run.epoch` to `run.train_config.epochs`, checkpointing to `out_path`.

    With `out_path` None nothing is written (no checkpoint, no history CSV) and Ctrl-C raises
    KeyboardInterrupt. No process-wide settings change (CPU tuning: susl_cli/cpu_tuning.py).
    Under a distributed `world` (susl_cli/distributed.py, process group joined) every process
    calls fit with the same run and data; process 0 writes, the others wait at a barrier.
    """
    observer = observer or SilentObserver()
    config = run.train_config
    check_batch_sizes(world, config.batch_size, config.labelled_batch_size)
    net = wrap(run.model, world)
    last_saved = run.epoch
    last_write = time.monotonic()
    snapshot = None
    writes = out_path is not None and world.is_main
    while run.epoch < config.epochs:
        try:
            record = _train_epoch(run, data, observer, net, world)
        except KeyboardInterrupt:
            if out_path is None:
                raise
            if writes and snapshot is not None and last_saved < run.epoch:
                save_run(snapshot, out_path, completed=False)
                last_saved = run.epoch
            raise TrainingInterrupted(_interrupted_message(run.epoch + 1, out_path, last_saved)
                                      ) from None
        except RuntimeError as err:
            if not (world.distributed and is_peer_failure(err)):
                raise
            raise PeerFailure(_peer_lost_message(world, err, run.epoch + 1, out_path,
                                                 last_saved)) from None
        except PeerFailure as err:  # SIGTERM from torchrun: another process failed
            raise PeerFailure(f"{world.describe()}, epoch {run.epoch + 1}: {err}; "
                              f"{_resume_hint(world, out_path, last_saved)}") from None
        if not all(math.isfinite(v) for v in record.values()):
            on_disk = "" if out_path is None else f"; {_on_disk(out_path, last_saved)}"
            raise TrainingError(f"the loss became NaN or infinite in epoch {run.epoch + 1}"
                                f"{on_disk}: lower --learning-rate or set --grad-clip")
        _finish_epoch(run, data, record)
        if writes:
            done = run.epoch == config.epochs
            due = (run.epoch - last_saved >= config.checkpoint_every
                   and time.monotonic() - last_write >= config.checkpoint_seconds)
            if done or due:
                _save_checkpoint(run, out_path, done, last_saved)
                last_saved, last_write = run.epoch, time.monotonic()
            else:
                snapshot = _snapshot(run)  # what Ctrl-C saves before the next write
            last_saved = _write_log(run, out_path, done, last_saved)
        if world.distributed and out_path is not None:
            try:  # the others wait while process 0 writes: every epoch ends together
                barrier(world)
            except PeerFailure as err:
                raise PeerFailure(f"{err}; {_resume_hint(world, out_path, last_saved)}"
                                  ) from None
        observer.epoch_finished(record)
    return run


def _peer_lost_message(world: World, err: BaseException, epoch: int, out_path: Path | None,
                       last_saved: int) -> str:
    where = f"{world.describe()} stopped in epoch {epoch}: {peer_lost_text(world, err)}"
    if out_path is None:
        return where
    return f"{where}; {_resume_hint(world, out_path, last_saved)}"


def _resume_hint(world: World, out_path: Path | None, last_saved: int) -> str:
    """What the checkpoint holds after a distributed run stopped (process 0 knows)."""
    if out_path is None:
        return "nothing was written"
    if not world.is_main:
        return (f"the last checkpoint process 0 wrote to {str(out_path)!r} (if any) is whole: "
                "continue with --resume")
    if last_saved:
        return f"{str(out_path)!r} holds epoch {last_saved}: continue with --resume"
    return f"no epoch was saved to {str(out_path)!r}: start again without --resume"


def _finish_epoch(run: Run, data: TrainingData, record: dict[str, float]) -> None:
    """Count the epoch, add the label-free diagnostics and the merge guard's dual step to
    `record`, and append it to the run's history."""
    run.epoch += 1
    model, mc = run.model, run.model_config
    record["train_labelled_acc"] = labelled_accuracy(model, data.x_labelled, data.y_labelled)
    labelled, unlabelled = assignment_counts(model, data.x_labelled, data.x_unlabelled)
    record["components_used"] = float(components_used(labelled, unlabelled))
    record["labelled_share_ratio"] = largest_labelled_share_ratio(
        labelled, unlabelled, mc.prior, mc.n_labelled)
    if _guarded(run, data):  # the merge guard steps with the optimiser (_train_epoch)
        record["share_multiplier_max"] = max(_multipliers(run))
    for key, value in record.items():
        # a key new since a resumed checkpoint was written: earlier epochs did not log it
        run.history.setdefault(key, [math.nan] * (run.epoch - 1)).append(value)


def _write_log(run: Run, out_path: Path, done: bool, last_saved: int) -> int:
    """Rewrite the history CSV a user plots (after the checkpoint: the log never claims an
    epoch a checkpoint write lost); Ctrl-C during it saves the finished epochs first, as
    during an epoch. Returns the epoch now saved in `out_path`."""
    try:
        write_history_csv(run.history, history_csv_path(out_path))
    except OutputError as err:  # a full disk: say what the checkpoint still holds
        then = "; continue with --resume" if last_saved and not done else ""
        raise OutputError(f"could not write the history CSV of epoch {run.epoch}: {err}; "
                          f"{_on_disk(out_path, last_saved)}{then}") from None
    except KeyboardInterrupt:
        if last_saved < run.epoch:
            _save_checkpoint(run, out_path, done, last_saved)
            last_saved = run.epoch
        then = "" if done else ": continue with --resume"
        raise TrainingInterrupted(f"interrupted after epoch {run.epoch}, while writing its "
                                  f"history CSV; {last_saved} finished epochs are saved in "
                                  f"{str(out_path)!r}{then}") from None
    return last_saved


def _interrupted_message(epoch: int, out_path: Path, last_saved: int) -> str:
    """Where an interrupted run stands: resumable from OUT, or nothing saved yet."""
    if last_saved:
        return (f"interrupted during epoch {epoch}; {last_saved} finished epochs are saved in "
                f"{str(out_path)!r}: continue with --resume")
    return (f"interrupted during epoch {epoch}, before any epoch was saved ({str(out_path)!r} "
            "was not written): run the command again, without --resume")


def _guarded(run: Run, data: TrainingData) -> bool:
    return run.model.objective.labelled_share_cap > 0 and data.share_targets is not None


def _multipliers(run: Run) -> list[float]:
    """The merge guard's multipliers (stored in the checkpoint's meta; 0 = off)."""
    return list(run.meta.share_multipliers or [0.0] * run.model_config.n_labelled)


def _on_disk(out_path: Path, last_saved: int) -> str:
    """What a stopped run left in its checkpoint file, for the error message."""
    if last_saved:
        return f"{str(out_path)!r} holds its last good checkpoint (epoch {last_saved})"
    return f"no epoch of this run was saved to {str(out_path)!r}"


def _save_checkpoint(run: Run, out_path: Path, completed: bool, last_saved: int) -> None:
    """Write the checkpoint (atomically); if that fails, say what the file on disk still holds."""
    on_disk = _on_disk(out_path, last_saved)
    then = "; continue with --resume" if last_saved else ""
    try:
        save_run(run, out_path, completed=completed)
    except OutputError as err:
        raise OutputError(f"could not save epoch {run.epoch}: {err}; {on_disk}{then}") from None
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"interrupted while saving epoch {run.epoch}; {on_disk}{then}"
                                  ) from None


def _train_epoch(run: Run, data: TrainingData, observer: Observer,
                 net: torch.nn.Module | None = None, world: World = SINGLE) -> dict[str, float]:
    """One epoch of steps `net(batch)` (run.model, or DDP around it under a distributed
    world: then each process takes its slice of every global batch, training_data.py)."""
    config = run.train_config
    model, device = run.model, run.model.log_prior.device
    net = net or model
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed * EPOCH_SEED_STRIDE + run.epoch)
    lr = scheduled_lr(config, run.epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    batches_u, batches_l = batch_indices(data, config.batch_size, config.labelled_batch_size,
                                          generator, device)
    observer.epoch_started(run.epoch + 1, config.epochs, len(batches_u))
    guard, view = None, None
    if _guarded(run, data) and run.epoch >= WARMUP_EPOCHS:  # dual step every step
        guard = ShareGuard(data.share_targets, model.objective.labelled_share_cap,
                           _multipliers(run), run.meta.share_average)
    elif _guarded(run, data):  # warm-up: the penalty is logged (0), nothing measured or pushed
        view = GuardState(torch.zeros_like(data.share_targets), data.share_targets)
    model.train()
    names: list[str] = []
    sums = torch.zeros((), device=device)  # running sums of the logged terms, on the device
    start = reported = time.perf_counter()
    for step, (idx_u, idx_l) in enumerate(zip(batches_u, batches_l, strict=True), start=1):
        x_u = maybe_binarise(data.unlabelled_batch(idx_u), data.binarise, generator) \
            if idx_u is not None else None
        x_l = y_l = None
        if idx_l is not None:
            x_l = maybe_binarise(data.x_labelled[idx_l], data.binarise, generator)
            y_l = data.y_labelled[idx_l]
        if guard is not None:
            view = GuardState(guard.multipliers, guard.targets, guard.observed)
        batch = Batch(x_l, y_l, x_u, generator, view,
                      evidence_unlabelled=data.evidence_batch(idx_u))
        out = net(shard_batch(batch, world.rank, world.size) if world.distributed else batch)
        run.optimizer.zero_grad(set_to_none=True)
        # Under DDP each process's gradient is its part of the global batch's gradient
        # (models/shard.py); DDP averages the parts, so scale by their number to sum them.
        (out.loss * world.size if world.distributed else out.loss).backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_value_(model.parameters(), config.grad_clip)
        run.optimizer.step()
        if guard is not None:
            guard.step()  # the dual step, from the ratios this step's objective measured
        names = list(out.terms)
        sums = sums + torch.stack(list(out.terms.values()))  # no host-device sync per step
        observer.steps_done(1)
        if time.perf_counter() - reported > RUNNING_LOSS_SECONDS and "loss" in names:
            observer.running_loss(float(sums[names.index("loss")]) / step)
            reported = time.perf_counter()
    if guard is not None:
        state = guard.state()
        run.meta.share_multipliers = state["share_multipliers"]
        run.meta.share_average = state["share_average"] or None
    n_steps = max(len(batches_u), 1)
    totals = sums.tolist() if names else []  # one sync per epoch
    record = {k: v / n_steps for k, v in zip(names, totals, strict=True)}
    seconds = time.perf_counter() - start
    n_seen = len(data.x_unlabelled) if len(data.x_unlabelled) else len(data.x_labelled)
    record.update(epoch=float(run.epoch + 1), lr=lr, seconds=seconds,
                  samples_per_s=n_seen / max(seconds, 1e-9))
    return record


def _snapshot(run: Run) -> Run:
    """A copy of the run's state at an epoch boundary (to save on Ctrl-C between checkpoints)."""
    return copy.deepcopy(run)


def train_mask_file(
    mask_path: Path,
    out_path: Path,
    *,
    options: ModelOptions,
    train_overrides: dict[str, object],
    preset: str | None = None,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    observer: Observer | None = None,
    discovery: DiscoveryOptions | None = None,
    world: World = SINGLE,
    stream: bool | None = None,
) -> Run:
    """Train (or resume training) a model on a mask file, checkpointing to `out_path`.

    `train_overrides` holds the TrainConfig and ObjectiveConfig fields the user set; the rest
    come from the preset (paper Table A.1 for the mask's dataset) or the configs' defaults.
    A finished run's extra components are then grouped into discovered classes
    (susl_cli/discover.py), stored in the checkpoint. Under torchrun every process calls
    this with its `world` (process group joined: susl_cli/distributed.py). `stream` True
    leaves the unlabelled rows in the mask file and reads each batch from it, False holds
    them in memory; None lets the memory check decide (training_data.plan_data).
    """
    mask_path, out_path = Path(mask_path), Path(out_path)
    try:  # under DDP every process checks; one failing stops the others (distributed.agree)
        torch_device = training_device(world, resolve_device(device), device)
        run, masked = prepare_run(mask_path, out_path, options, train_overrides, preset,
                               torch_device, resume, overwrite, world, stream)
        check_batch_sizes(world, run.train_config.batch_size,
                          run.train_config.labelled_batch_size)
    except BaseException:
        with contextlib.suppress(PeerFailure):  # this process's own error is the one to show
            agree(world, ok=False)
        raise
    agree(world, ok=True)
    run.meta.world_size = world.size  # the checkpoint records how many processes trained it
    data = prepare_data(run, masked.x_train, masked.y_observed, torch_device, world)
    if data.evidence is not None and data.share_targets is not None:
        run.meta.label_evidence = data.evidence.describe(
            float(data.share_targets.sum()), run.model.objective.label_evidence)
    with contextlib.closing(data):  # streamed: the mask file stays open until discovery ends
        run = fit(run, data, out_path, observer, world)
        if world.is_main:  # the others are done: discovery is process 0's alone
            store_discovery(run, out_path, discover_run(run, masked.x_train,
                                                        discovery or DiscoveryOptions()))
    return run
