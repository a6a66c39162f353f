"""Training several seeds of one configuration as one batched model, in one process.

The paper's protocol is S seeds of the same configuration. `fit_seeds` trains them together:
the S models' parameters are stacked (torch.func.stack_module_state) and every step evaluates
all S losses in one torch.func.vmap of `model(batch)`, so each layer is one batched matrix
product instead of S small ones and the Python overhead of a step is paid once, not S times.
Each seed still is the run `train.fit` would train alone:
- its own initialisation, data and per-epoch generator (seeded from (seed, epoch) as fit does),
  which draws, in fit's order, the batch order, then per step the binarisation and the noise;
- its own noise inside the model: vmap cannot take one torch.Generator per seed, so the shapes
  of a step's draws (`losses.draw`) are recorded once per batch shape, each seed draws that
  sequence from its own generator, and the draws are replayed inside vmap (`_Replay`);
- its own gradient: the step minimises the SUM of the S losses, and seed s's loss depends only
  on seed s's slice of the stacked parameters, so each slice's gradient is that seed's own;
- its own optimiser state: Adam, its L2 weight decay and the elementwise gradient clip act on
  each element alone, so one Adam over the stacked parameters is S Adams (same learning rate:
  the schedule depends on the epoch only);
- its own checkpoint: at each epoch end the slices are copied back into the seeds' Runs, whose
  diagnostics, history, checkpoints and CSV logs are those of separate runs; resuming stacks
  them again. The history's `seconds` is the seed's share (1/S) of the batch's wall time.
Results equal per-seed training to float tolerance (batched kernels round differently), and
are bit-identical from run to run. Not supported: the merge guard (its dual step is per-run
state outside the model) and distributed training.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.func import functional_call, stack_module_state, vmap

from susl_cli import losses
from susl_cli.discover import DiscoveryOptions
from susl_cli.discovery_runs import discover_run, store_discovery
from susl_cli.distributed import SINGLE
from susl_cli.errors import ConfigError, TrainingError, UsageError
from susl_cli.models import Batch
from susl_cli.run_setup import prepare_run
from susl_cli.runs import ModelOptions, Run, resolve_device
from susl_cli.train import (
    EPOCH_SEED_STRIDE,
    RUNNING_LOSS_SECONDS,
    Observer,
    SilentObserver,
    TrainingInterrupted,
    _finish_epoch,
    _guarded,
    _save_checkpoint,
    _snapshot,
    _write_log,
    fit,
    scheduled_lr,
)
from susl_cli.training_data import TrainingData, batch_indices, maybe_binarise, prepare_data

Recipe = tuple[tuple[Callable[..., torch.Tensor], torch.Size, torch.dtype], ...]


@dataclasses.dataclass(frozen=True)
class SeedJob:
    """One seed's run: its mask file, checkpoint, training settings (seed included) and whether
    to resume the checkpoint (`train.train_mask_file`'s arguments of the same names)."""

    mask_path: Path
    out_path: Path
    train_overrides: dict[str, object]
    resume: bool = False


def train_seeds(jobs: Sequence[SeedJob], *, options: ModelOptions, preset: str | None = None,
                device: str = "auto", observer: Observer | None = None,
                discovery: DiscoveryOptions | None = None) -> list[Run]:
    """`train.train_mask_file` for several seeds of one configuration, in one process: batched
    (`fit_seeds`) when they can share one model (`check_batchable`), else one after another.
    Each checkpoint ends as its own `susl train` would leave it, discovery included."""
    torch_device = resolve_device(device)
    prepared = [prepare_run(job.mask_path, job.out_path, options, job.train_overrides, preset,
                            torch_device, job.resume, False, SINGLE) for job in jobs]
    runs = [run for run, _ in prepared]
    for run in runs:
        run.meta.world_size = SINGLE.size
    datas = [prepare_data(run, masked.x_train, masked.y_observed, torch_device)
             for run, masked in prepared]
    paths = [job.out_path for job in jobs]
    try:
        check_batchable(runs, datas)
    except ConfigError:  # e.g. resumed seeds saved at different epochs: each alone
        runs = [fit(run, data, path, observer)
                for run, data, path in zip(runs, datas, paths, strict=True)]
    else:
        runs = fit_seeds(runs, datas, paths, observer)
    for run, (_, masked), path in zip(runs, prepared, paths, strict=True):
        store_discovery(run, path, discover_run(run, masked.x_train,
                                                discovery or DiscoveryOptions()))
    return runs


class _Recorder:
    """A noise source that notes each draw's sampler, shape and dtype and returns zeros."""

    def __init__(self) -> None:
        self.draws: list[tuple[Callable[..., torch.Tensor], torch.Size, torch.dtype]] = []

    def __call__(self, sampler, like, generator, rows) -> torch.Tensor:
        self.draws.append((sampler, like.shape, like.dtype))
        return torch.zeros_like(like)


class _Replay:
    """A noise source that hands out one seed's recorded draws, in order (inside vmap)."""

    def __init__(self, tape: Sequence[torch.Tensor]) -> None:
        self.tape = iter(tape)

    def __call__(self, sampler, like, generator, rows) -> torch.Tensor:
        if rows is not None:
            raise UsageError("seed batching does not run under a distributed world")
        noise = next(self.tape)
        if noise.shape != like.shape:  # the model drew differently than when recorded
            raise TrainingError(f"seed batching: a draw of shape {tuple(like.shape)} met a "
                                f"recorded one of {tuple(noise.shape)}")
        return noise


def check_batchable(runs: Sequence[Run], datas: Sequence[TrainingData]) -> None:
    """Refuse runs that cannot share one batched model: different architectures, objectives,
    settings (other than the seed), epochs, data sizes, or the merge guard."""
    if not runs or len(runs) != len(datas):
        raise UsageError("seed batching needs one TrainingData per run, and at least one run")
    first, data0 = runs[0], datas[0]
    for run, data in zip(runs, datas, strict=True):
        if _guarded(run, data):
            raise ConfigError(f"seed {run.train_config.seed} uses the merge guard "
                              "(--labelled-share-cap), which seed batching does not support: "
                              "train it on its own")
        problems = [
            ("model", dataclasses.replace(run.model_config, prior=())
             != dataclasses.replace(first.model_config, prior=())),
            ("objective", run.model.objective != first.model.objective),
            ("training settings", dataclasses.replace(run.train_config, seed=0)
             != dataclasses.replace(first.train_config, seed=0)),
            ("finished epochs", run.epoch != first.epoch),
            ("data sizes", (len(data.x_labelled), len(data.x_unlabelled), data.binarise)
             != (len(data0.x_labelled), len(data0.x_unlabelled), data0.binarise)),
        ]
        bad = [name for name, differs in problems if differs]
        if bad:
            raise ConfigError(f"seed {run.train_config.seed} cannot be batched with seed "
                              f"{first.train_config.seed}: their {', '.join(bad)} differ: "
                              "train it on its own")


class SeedBatch:
    """The S runs' parameters and Adam state stacked along a leading seed axis."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self.runs = list(runs)
        self.template = copy.deepcopy(runs[0].model)  # functional_call swaps in the stacks
        self.params, self.buffers = stack_module_state([r.model for r in runs])
        self.names = list(self.params)
        config = runs[0].train_config
        fused = all(p.device.type in ("cpu", "cuda") for p in self.params.values())
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=config.learning_rate,
                                          weight_decay=config.weight_decay, fused=fused)
        self._stack_optimizer_state()

    def _per_seed(self, run: Run) -> list[torch.nn.Parameter]:
        return [dict(run.model.named_parameters())[name] for name in self.names]

    def _stack_optimizer_state(self) -> None:
        """Each seed's Adam state (all empty for a new run), stacked like the parameters."""
        states = [[r.optimizer.state.get(p, {}) for p in self._per_seed(r)] for r in self.runs]
        for i, stacked in enumerate(self.params.values()):
            per_seed = [s[i] for s in states]
            if not per_seed[0]:
                continue
            self.optimizer.state[stacked] = {
                key: (per_seed[0][key].clone() if key == "step"  # the same count in every seed
                      else torch.stack([s[key] for s in per_seed]))
                for key in per_seed[0]}

    def unstack(self) -> None:
        """Copy each seed's slice of the parameters and Adam state back into its Run."""
        with torch.no_grad():
            for s, run in enumerate(self.runs):
                for name, param in zip(self.names, self._per_seed(run), strict=True):
                    stacked = self.params[name]
                    param.copy_(stacked[s])
                    state = self.optimizer.state.get(stacked)
                    if state:
                        run.optimizer.state[param] = {
                            key: value.clone() if key == "step" else value[s].clone()
                            for key, value in state.items()}

    def _loss(self, params, buffers, x_l, y_l, x_u, evidence, tape):
        """One seed's loss and logged terms (vmapped over the seed axis)."""
        with losses.noise_source(_Replay(tape)):
            out = functional_call(self.template, (params, buffers),
                                  (Batch(x_l, y_l, x_u, None, None, evidence_unlabelled=evidence),))
        return out.loss, out.terms

    def step(self, x_l, y_l, x_u, evidence, tape) -> dict[str, torch.Tensor]:
        """One optimiser step of every seed on its (S, B, ...) batch and draws; the terms (S,)."""
        args = (x_l, y_l, x_u, evidence)
        in_dims = tuple(None if a is None else 0 for a in args)
        step = vmap(self._loss, in_dims=(0, 0, *in_dims, 0), randomness="error")
        loss, terms = step(self.params, self.buffers, *args, tape)
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # seed s's slice of the gradient is its own loss's gradient
        clip = self.runs[0].train_config.grad_clip
        if clip > 0:
            torch.nn.utils.clip_grad_value_(self.params.values(), clip)
        self.optimizer.step()
        return terms

    def record(self, x_l, y_l, x_u, evidence) -> Recipe:
        """The draws one step makes on batches of these shapes (seed 0's model, no gradient)."""
        recorder = _Recorder()
        model = self.runs[0].model
        with torch.no_grad(), losses.noise_source(recorder):
            model(Batch(x_l, y_l, x_u, None, None, evidence_unlabelled=evidence))
        return tuple(recorder.draws)


def _seed_batches(run: Run, data: TrainingData, idx_u, idx_l, generator: torch.Generator):
    """One seed's step data, drawn from its generator in fit's order (x_u, then x_l), and the
    unlabelled rows' label-evidence targets (None when the run does not use them)."""
    x_u = None
    if idx_u is not None:
        x_u = maybe_binarise(data.x_unlabelled[idx_u], data.binarise, generator)
    x_l = y_l = None
    if idx_l is not None:
        x_l = maybe_binarise(data.x_labelled[idx_l], data.binarise, generator)
        y_l = data.y_labelled[idx_l]
    return x_l, y_l, x_u, data.evidence_batch(idx_u)


def _stack(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if parts[0] is None else torch.stack(parts)  # type: ignore[arg-type]


def _train_epoch(batch: SeedBatch, datas: Sequence[TrainingData],
                 observer: Observer) -> list[dict[str, float]]:
    """One epoch of every seed; each seed's record as train._train_epoch would log it."""
    runs = batch.runs
    config, epoch = runs[0].train_config, runs[0].epoch
    device = runs[0].model.log_prior.device
    lr = scheduled_lr(config, epoch)
    for group in batch.optimizer.param_groups:
        group["lr"] = lr
    generators, orders = [], []
    for run, data in zip(runs, datas, strict=True):
        generator = torch.Generator(device=device)
        generator.manual_seed(run.train_config.seed * EPOCH_SEED_STRIDE + epoch)
        generators.append(generator)
        orders.append(batch_indices(data, config.batch_size, config.labelled_batch_size,
                                    generator, device))
    n_steps = len(orders[0][0])
    observer.epoch_started(epoch + 1, config.epochs, n_steps)
    batch.template.train()
    recipes: dict[tuple, Recipe] = {}
    names: list[str] = []
    sums = torch.zeros((), device=device)
    start = reported = time.perf_counter()
    for step in range(n_steps):
        parts, tapes = [], []
        for s, (run, data) in enumerate(zip(runs, datas, strict=True)):
            x_l, y_l, x_u, evidence = _seed_batches(run, data, orders[s][0][step],
                                                 orders[s][1][step], generators[s])
            key = tuple(None if t is None else tuple(t.shape) for t in (x_l, x_u))
            if key not in recipes:
                recipes[key] = batch.record(x_l, y_l, x_u, evidence)
            tapes.append([sampler(shape, generator=generators[s], device=device, dtype=dtype)
                          for sampler, shape, dtype in recipes[key]])
            parts.append((x_l, y_l, x_u, evidence))
        stacked = [_stack([p[i] for p in parts]) for i in range(4)]
        tape = [torch.stack([t[i] for t in tapes]) for i in range(len(tapes[0]))]
        terms = batch.step(*stacked, tape)
        names = list(terms)
        sums = sums + torch.stack(list(terms.values()), -1)  # (S, T), no sync per step
        observer.steps_done(1)
        if time.perf_counter() - reported > RUNNING_LOSS_SECONDS and "loss" in names:
            observer.running_loss(float(sums[:, names.index("loss")].mean()) / (step + 1))
            reported = time.perf_counter()
    # each seed's share of the wall time: summed over the runs (the experiment report's
    # training time) it is the time spent, as for runs trained one by one
    seconds = (time.perf_counter() - start) / len(runs)
    totals = sums.tolist() if names else [[] for _ in runs]  # one sync per epoch
    records = []
    for data, row in zip(datas, totals, strict=True):
        record = {k: v / max(n_steps, 1) for k, v in zip(names, row, strict=True)}
        n_seen = len(data.x_unlabelled) if len(data.x_unlabelled) else len(data.x_labelled)
        record.update(epoch=float(epoch + 1), lr=lr, seconds=seconds,
                      samples_per_s=n_seen / max(seconds, 1e-9))
        records.append(record)
    return records


def fit_seeds(runs: Sequence[Run], datas: Sequence[TrainingData],
              out_paths: Sequence[Path] | None = None,
              observer: Observer | None = None) -> list[Run]:
    """Train the runs (seeds of one configuration, see module doc) together from their common
    `epoch` to `train_config.epochs`, each checkpointed to its own path as `train.fit` would.

    With `out_paths` None nothing is written and Ctrl-C raises KeyboardInterrupt; otherwise
    Ctrl-C saves every seed's finished epochs and raises TrainingInterrupted (resume: load
    each checkpoint with its optimizer and call fit_seeds again). `observer` hears the epoch
    and its steps once, and `epoch_finished` once per seed, in order.
    """
    check_batchable(runs, datas)
    observer = observer or SilentObserver()
    runs = list(runs)
    paths = list(out_paths) if out_paths is not None else None
    if paths is not None and len(paths) != len(runs):
        raise UsageError("seed batching needs one output path per run")
    config = runs[0].train_config
    batch = SeedBatch(runs)
    last_saved = runs[0].epoch
    last_write = time.monotonic()
    snapshots: list[Run] | None = None
    while runs[0].epoch < config.epochs:
        try:
            records = _train_epoch(batch, datas, observer)
        except KeyboardInterrupt:
            if paths is None:
                raise
            epoch = runs[0].epoch
            if snapshots is not None and last_saved < epoch:
                for snapshot, path in zip(snapshots, paths, strict=True):
                    _save_checkpoint(snapshot, path, False, last_saved)
                last_saved = epoch
            raise TrainingInterrupted(_interrupted(epoch + 1, paths, last_saved)) from None
        for run, record in zip(runs, records, strict=True):
            if not all(math.isfinite(v) for v in record.values()):
                raise TrainingError(f"seed {run.train_config.seed}: the loss became NaN or "
                                    f"infinite in epoch {run.epoch + 1}: lower "
                                    "--learning-rate or set --grad-clip")
        batch.unstack()
        for run, data, record in zip(runs, datas, records, strict=True):
            _finish_epoch(run, data, record)
        if paths is not None:
            done = runs[0].epoch == config.epochs
            due = (runs[0].epoch - last_saved >= config.checkpoint_every
                   and time.monotonic() - last_write >= config.checkpoint_seconds)
            if done or due:
                for run, path in zip(runs, paths, strict=True):
                    _save_checkpoint(run, path, done, last_saved)
                saved, last_write = runs[0].epoch, time.monotonic()
            else:
                snapshots = [_snapshot(run) for run in runs]
                saved = last_saved
            for run, path in zip(runs, paths, strict=True):
                written = _write_log(run, path, done, saved)
            last_saved = written
        for record in records:
            observer.epoch_finished(record)
    return runs


def _interrupted(epoch: int, paths: Sequence[Path], last_saved: int) -> str:
    """train.fit's message, for the S checkpoints of a seed batch."""
    names = ", ".join(repr(str(p)) for p in paths)
    if last_saved:
        return (f"interrupted during epoch {epoch}; {last_saved} finished epochs are saved in "
                f"each seed's checkpoint ({names}): continue with --resume")
    return (f"interrupted during epoch {epoch}, before any epoch was saved ({names} were not "
            "written): run the command again, without --resume")
