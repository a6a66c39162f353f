"""Fitting a run: minibatch loop, learning-rate schedule, checkpoints, resume, interrupts.

Protocol: each step takes one unlabelled batch and one labelled batch (the
small labelled set is cycled); one epoch is one pass over the unlabelled points. Image batches
are re-binarised every step (x ~ Bernoulli(grey level)). Randomness for epoch e comes from a
generator seeded with (seed, e), so a run resumed at an epoch boundary draws exactly what an
uninterrupted run would have drawn.

This module never reads test labels or the evaluation-only true labels of training points.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from susl_cli.config import PAPER_PRESETS, TrainConfig
from susl_cli.discover import DiscoveryOptions
from susl_cli.discovery_runs import discover_run, store_discovery
from susl_cli.errors import ConfigError, OutputError, SuslError, TrainingError, UsageError
from susl_cli.objective import training_loss
from susl_cli.runs import ModelOptions, Run, load_model, new_run, resolve_device, save_run
from susl_cli.share_guard import WARMUP_EPOCHS, ShareGuard, unlabelled_targets
from susl_cli.sizing import choose_by_size
from susl_cli.storage.files import check_output_path, claim_output
from susl_cli.storage.h5 import peek_kind
from susl_cli.storage.masked import MaskedDataset, file_sha256, read_masked_dataset
from susl_cli.training_log import history_csv_path, write_history_csv

EPOCH_SEED_STRIDE = 1_000_003  # distinct generator seeds per (seed, epoch)
# glibc mallopt parameters and the values set by `keep_cpu_buffers` (see there).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 32 << 20  # the largest value glibc accepts
_TRIM_THRESHOLD_BYTES = 512 << 20


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


@dataclass
class TrainingData:
    """Model-ready tensors on the training device (labels as component indices)."""

    x_labelled: torch.Tensor  # (N_l, D)
    y_labelled: torch.Tensor  # (N_l,) component index
    x_unlabelled: torch.Tensor  # (N_u, D)
    binarise: bool
    share_targets: torch.Tensor | None = None  # (n_labelled,) p_u(c), for the merge guard


def prepare_data(run: Run, x_train: np.ndarray, y_observed: np.ndarray,
                 device: torch.device) -> TrainingData:
    """Apply the run's transform and split by the observed labels (-1 = unlabelled)."""
    x = torch.from_numpy(run.transform.apply(x_train)).to(device)
    labelled = np.flatnonzero(y_observed >= 0)
    unlabelled = np.flatnonzero(y_observed < 0)
    class_to_component = {c: j for j, c in enumerate(run.meta["labelled_classes"])}
    y = np.asarray([class_to_component[int(c)] for c in y_observed[labelled]], dtype=np.int64)
    mc = run.model_config
    targets = None
    if 0 < mc.n_labelled < mc.n_components and len(unlabelled):
        counts = np.bincount(y, minlength=mc.n_labelled)
        targets = torch.tensor(unlabelled_targets(mc.prior, counts, len(unlabelled)),
                               dtype=x.dtype, device=device)
    return TrainingData(x[torch.from_numpy(labelled).to(device)], torch.from_numpy(y).to(device),
                        x[torch.from_numpy(unlabelled).to(device)],
                        mc.likelihood == "bernoulli", targets)


def fit(run: Run, data: TrainingData, out_path: Path,
        observer: Observer | None = None) -> Run:
    """Train from `run.epoch` to `run.train_config.epochs`, checkpointing to `out_path`."""
    observer = observer or SilentObserver()
    config = run.train_config
    if run.model.log_prior.device.type == "cpu":
        tune_cpu()
    last_saved = run.epoch
    last_write = time.monotonic()
    snapshot = None
    while run.epoch < config.epochs:
        try:
            record = _train_epoch(run, data, observer)
        except KeyboardInterrupt:
            if snapshot is not None and last_saved < run.epoch:
                save_run(snapshot, out_path, completed=False)
                last_saved = run.epoch
            raise TrainingInterrupted(_interrupted_message(run.epoch + 1, out_path, last_saved)
                                      ) from None
        if not all(math.isfinite(v) for v in record.values()):
            raise TrainingError(
                f"the loss became NaN or infinite in epoch {run.epoch + 1}; "
                f"{_on_disk(out_path, last_saved)}: lower --learning-rate or set --grad-clip"
            )
        run.epoch += 1
        record["train_labelled_acc"] = labelled_accuracy(run, data)
        labelled, unlabelled = assignment_counts(run, data)
        record["components_used"] = float(components_used(labelled, unlabelled))
        record["labelled_share_ratio"] = largest_labelled_share_ratio(
            labelled, unlabelled, run.model_config.prior, run.model_config.n_labelled)
        if _guarded(run, data):  # the merge guard (susl_cli/share_guard.py)
            record["share_multiplier_max"] = max(_multipliers(run))
        for key, value in record.items():
            # a key new since a resumed checkpoint was written: earlier epochs did not log it
            run.history.setdefault(key, [math.nan] * (run.epoch - 1)).append(value)
        done = run.epoch == config.epochs
        due = (run.epoch - last_saved >= config.checkpoint_every
               and time.monotonic() - last_write >= config.checkpoint_seconds)
        if done or due:
            _save_checkpoint(run, out_path, done, last_saved)
            last_saved, last_write = run.epoch, time.monotonic()
        else:
            snapshot = _snapshot(run)  # what Ctrl-C saves before the next write
        last_saved = _write_log(run, out_path, done, last_saved)
        observer.epoch_finished(record)
    return run


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
    return run.train_config.labelled_share_cap > 0 and data.share_targets is not None


def _multipliers(run: Run) -> list[float]:
    """The merge guard's multipliers (stored in the checkpoint's meta; 0 = off)."""
    return list(run.meta.get("share_multipliers") or [0.0] * run.model_config.n_labelled)


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


def _train_epoch(run: Run, data: TrainingData, observer: Observer) -> dict[str, float]:
    config = run.train_config
    model, device = run.model, run.model.log_prior.device
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed * EPOCH_SEED_STRIDE + run.epoch)
    lr = scheduled_lr(config, run.epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    batches_u, batches_l = _batch_indices(data, config.batch_size, config.labelled_batch_size,
                                          generator, device)
    observer.epoch_started(run.epoch + 1, config.epochs, len(batches_u))
    guard = None
    if _guarded(run, data) and run.epoch >= WARMUP_EPOCHS:
        guard = ShareGuard(data.share_targets, config.labelled_share_cap, _multipliers(run),
                           run.meta.get("share_average"))
    model.train()
    names: list[str] = []
    sums = torch.zeros((), device=device)  # running sums of the logged terms, on the device
    start = reported = time.perf_counter()
    for step, (idx_u, idx_l) in enumerate(zip(batches_u, batches_l, strict=True), start=1):
        x_u = _maybe_binarise(data.x_unlabelled[idx_u], data.binarise, generator) \
            if idx_u is not None else None
        x_l = y_l = None
        if idx_l is not None:
            x_l = _maybe_binarise(data.x_labelled[idx_l], data.binarise, generator)
            y_l = data.y_labelled[idx_l]
        out = training_loss(model, x_l, y_l, x_u, config, generator, guard)
        run.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_value_(model.parameters(), config.grad_clip)
        run.optimizer.step()
        if guard is not None:
            guard.step()  # the dual step, every optimisation step
        names = list(out.terms)
        sums = sums + torch.stack(list(out.terms.values()))  # no host-device sync per step
        observer.steps_done(1)
        if time.perf_counter() - reported > RUNNING_LOSS_SECONDS and "loss" in names:
            observer.running_loss(float(sums[names.index("loss")]) / step)
            reported = time.perf_counter()
    if guard is not None:
        run.meta.update(guard.state())
    n_steps = max(len(batches_u), 1)
    totals = sums.tolist() if names else []  # one sync per epoch
    record = {k: v / n_steps for k, v in zip(names, totals, strict=True)}
    seconds = time.perf_counter() - start
    n_seen = len(data.x_unlabelled) if len(data.x_unlabelled) else len(data.x_labelled)
    record.update(epoch=float(run.epoch + 1), lr=lr, seconds=seconds,
                  samples_per_s=n_seen / max(seconds, 1e-9))
    return record


_buffers_kept = False


def tune_cpu() -> dict[str, bool]:
    """Process-wide settings for training on the CPU (idempotent); returns what is in effect.

    - flush_denormal: subnormal floats (|x| < 1.2e-38 in float32) are flushed to zero. With
      exact enumeration, the gradients of components that q(y|x) all but rules out become
      subnormal, and x86 arithmetic on subnormals is up to 100x slower: GM-DGM with d_z = 100
      slowed from ~500 to ~70 samples/s within 50 steps without this. Values that small lie
      far below the float32 resolution of every term they are added to.
    - keep_buffers: see `keep_cpu_buffers`.
    """
    return {"flush_denormal": torch.set_flush_denormal(True),
            "keep_buffers": keep_cpu_buffers()}


def keep_cpu_buffers() -> bool:
    """Stop glibc from handing freed tensor buffers back to the OS after every CPU step.

    A step allocates and frees dozens of (B*K, D) and (B*K, H) buffers of a few MB. By default
    glibc maps blocks this large freshly and trims the heap eagerly, so each step touches
    new pages: about 4,000 page faults and 8-16% of the step time (MNIST, K = 45, batch 100).
    Fixed thresholds keep the buffers in the heap for reuse. Process-wide and idempotent;
    Linux with glibc only (elsewhere a no-op). Returns whether the setting is in effect.
    """
    global _buffers_kept
    if not _buffers_kept and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            _buffers_kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
                                 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
        except (OSError, AttributeError):  # not glibc (e.g. musl): keep the defaults
            _buffers_kept = False
    return _buffers_kept


def _batch_indices(data: TrainingData, batch_u: int, batch_l: int,
                   generator: torch.Generator, device: torch.device) -> tuple[list, list]:
    """Unlabelled batches covering every point once; labelled batches cycled alongside.

    With no unlabelled data (fully labelled) an epoch is one pass over the labelled points.
    """
    n_u, n_l = len(data.x_unlabelled), len(data.x_labelled)
    if n_u == 0:
        perm = torch.randperm(n_l, generator=generator, device=device)
        labelled = list(perm.split(batch_l))
        return [None] * len(labelled), labelled
    unlabelled = list(torch.randperm(n_u, generator=generator, device=device).split(batch_u))
    if n_l == 0:
        return unlabelled, [None] * len(unlabelled)
    needed = len(unlabelled) * batch_l
    repeats = math.ceil(needed / n_l)
    cycled = torch.cat([torch.randperm(n_l, generator=generator, device=device)
                        for _ in range(repeats)])[:needed]
    return unlabelled, list(cycled.split(batch_l))


def _maybe_binarise(x: torch.Tensor, binarise: bool, generator: torch.Generator) -> torch.Tensor:
    return torch.bernoulli(x, generator=generator) if binarise else x


@torch.no_grad()
def labelled_accuracy(run: Run, data: TrainingData, batch: int = 10_000) -> float:
    """Accuracy of q(y|x) on the labelled training points (the only labels training sees)."""
    if len(data.x_labelled) == 0:
        return float("nan")
    run.model.eval()
    correct = torch.zeros((), device=data.x_labelled.device)
    for start in range(0, len(data.x_labelled), batch):
        logits = run.model.classifier_logits(data.x_labelled[start:start + batch])
        correct += (logits.argmax(-1) == data.y_labelled[start:start + batch]).sum()
    return float(correct) / len(data.x_labelled)


@torch.no_grad()
def assignment_counts(run: Run, data: TrainingData,
                      batch: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, unlabelled): how many training points argmax q(y|x) puts in each component.

    One pass over the training points per epoch serves both label-free diagnostics below.
    """
    run.model.eval()
    counts = []
    for x in (data.x_labelled, data.x_unlabelled):
        tally = torch.zeros(run.model_config.n_components, dtype=torch.long, device=x.device)
        for start in range(0, len(x), batch):
            predicted = run.model.classifier_logits(x[start:start + batch]).argmax(-1)
            tally += torch.bincount(predicted, minlength=len(tally))
        counts.append(tally.cpu().numpy())
    return counts[0], counts[1]


def components_used(labelled: np.ndarray, unlabelled: np.ndarray) -> int:
    """How many components q(y|x) predicts for some unlabelled training point (label-free).

    Far fewer than the labelled classes plus the hidden ones means components are starved
    (README "Choices": --marginal-kl); with no unlabelled points, counted on the labelled ones.
    """
    counts = unlabelled if unlabelled.sum() else labelled
    return int(np.count_nonzero(counts))


def largest_labelled_share_ratio(labelled: np.ndarray, unlabelled: np.ndarray,
                                 prior: Sequence[float], n_labelled: int) -> float:
    """max over labelled components c of (share of training points q(y|x) puts in c) / p(y=c).

    Label-free. p(y=c) is estimated from the mask as the share of class c in the data, so a
    healthy run sits near 1 (1.04-1.06 measured on MNIST SUS); well above 1, a labelled
    component is absorbing a hidden class that looks like it (MNIST SUS seed 3 after 50
    epochs: 1.47, 9s merged into the labelled 4s). NaN when no class is labelled.
    """
    if n_labelled == 0:
        return math.nan
    counts = (labelled + unlabelled).astype(np.float64)
    share = counts[:n_labelled] / max(counts.sum(), 1.0)
    return float(np.max(share / np.asarray(prior[:n_labelled], dtype=np.float64)))


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
) -> Run:
    """Train (or resume training) a model on a mask file, checkpointing to `out_path`.

    `train_overrides` holds the TrainConfig fields the user set; the rest come from the
    preset (paper Table A.1 for the mask's dataset) or the TrainConfig defaults. A finished
    run's extra components are then grouped into discovered classes (susl_cli/discover.py),
    stored in the checkpoint.
    """
    mask_path, out_path = Path(mask_path), Path(out_path)
    torch_device = resolve_device(device)
    claim_output(out_path)  # one writer per checkpoint: a second `susl train -o OUT` is refused
    if resume:
        if not out_path.exists():
            raise UsageError(
                f"nothing to resume: {str(out_path)!r} does not exist (a run stopped before its "
                "first epoch was saved leaves no checkpoint): start it again without --resume"
            )
        peek_kind(out_path)  # a clear message when OUT is not a checkpoint
    else:
        if out_path.is_file() and not overwrite:
            raise OutputError(f"{str(out_path)!r} already exists: pass --resume to continue the "
                              "run it holds, or --overwrite to replace it")
        check_output_path(out_path, overwrite, inputs=(mask_path,))
    # the per-epoch log beside the checkpoint: checked (not an input, not a folder, a FIFO or a
    # link) and locked like the checkpoint; it belongs to OUT, so it is replaced without asking
    check_output_path(history_csv_path(out_path), True, inputs=(mask_path,))
    masked = read_masked_dataset(mask_path)  # observed labels only: never the true ones
    if resume:
        run = _resume(mask_path, out_path, options, train_overrides, torch_device)
    else:
        options, train_config, reasons = _apply_preset(preset, masked, options, train_overrides)
        run = new_run(masked, mask_path, options, train_config, torch_device)
        run.meta["auto_choice"] = list(reasons)  # stored in the checkpoint, shown by train
    data = prepare_data(run, masked.x_train, masked.y_observed, torch_device)
    run = fit(run, data, out_path, observer)
    store_discovery(run, out_path, discover_run(run, masked.x_train,
                                                discovery or DiscoveryOptions()))
    return run


def _apply_preset(preset: str | None, masked: MaskedDataset, options: ModelOptions,
                  overrides: dict[str, object]) -> tuple[ModelOptions, TrainConfig, tuple]:
    """(options, train config, reasons): the user's values, then the preset's or the
    data-size rules' (susl_cli/sizing.py), then the TrainConfig defaults."""
    dataset = masked.metadata.dataset
    values: dict[str, object] = {}
    reasons: tuple[str, ...] = ()
    if preset in (None, "default"):
        n_unlabelled = int(np.count_nonzero(masked.y_observed < 0))
        # labels as given: classes nobody labelled may exist, so extra components are offered
        has_hidden = (bool(masked.hidden_classes) or not masked.labelled_classes
                      or masked.metadata.label_source == "as-given")
        choice = choose_by_size(n_unlabelled, has_hidden, overrides, options.extra_components)
        values = dict(choice.train)
        reasons = choice.reasons
        if choice.extra_components is not None:
            options = dataclasses.replace(options, extra_components=choice.extra_components)
    elif preset == "paper":
        if dataset not in PAPER_PRESETS:
            raise ConfigError(f"--preset paper has values for {', '.join(PAPER_PRESETS)}, "
                              f"not {dataset!r}: set the sizes yourself")
        p = PAPER_PRESETS[dataset]
        values = {"batch_size": p.batch_size, "labelled_batch_size": p.batch_size,
                  "learning_rate": p.learning_rate, "marginal_kl": 0.0}  # paper's objective

        options = dataclasses.replace(
            options,
            latent_dim=options.latent_dim or p.latent_dim,
            hidden_units=options.hidden_units or p.hidden_units,
        )
    else:
        raise ConfigError(f"unknown --preset {preset!r}: use paper or default")
    return options, TrainConfig(**{**values, **overrides}), reasons  # type: ignore[arg-type]


# What `--resume` may change: the length of the run and how often it is saved.
RESUMABLE_SETTINGS = ("epochs", "checkpoint_every", "checkpoint_seconds")


def _resume(mask_path: Path, out_path: Path, options: ModelOptions,
            overrides: dict[str, object], device: torch.device) -> Run:
    run = load_model(out_path, device, with_optimizer=True)
    if run.meta["mask_sha256"] != file_sha256(mask_path):
        raise ConfigError(f"{str(out_path)!r} was trained on another mask file "
                          f"({run.meta['mask_file']!r}): resume with that file, or start a new "
                          "run with --overwrite")
    if options.model and options.model != run.model_config.model:
        raise ConfigError(f"{str(out_path)!r} holds a {run.model_config.model} model, not "
                          f"{options.model}: drop --model or start a new run")
    stored = dataclasses.asdict(run.train_config)
    changed = sorted(k for k, v in overrides.items()
                     if k not in RESUMABLE_SETTINGS and stored.get(k) != v)
    if changed:
        raise ConfigError(f"--resume continues the stored settings; these cannot change: "
                          f"{', '.join(changed)}")
    finished = run.epoch >= run.train_config.epochs
    run.train_config = dataclasses.replace(run.train_config, **overrides)  # type: ignore[arg-type]
    if run.epoch >= run.train_config.epochs:
        raise ConfigError(f"{str(out_path)!r} already finished {run.epoch} epochs: "
                          f"give --epochs above {run.epoch} to train longer (a warm restart)")
    if finished:  # extended on purpose: a new cosine cycle over the added epochs
        run.train_config = dataclasses.replace(run.train_config, lr_cycle_start=run.epoch)
    run.model.train()
    return run
