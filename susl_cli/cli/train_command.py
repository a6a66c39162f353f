"""`susl train`: fit a model to a mask file, with progress, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import typer

from susl_cli.cli.common import (
    DEVICE_OPTION,
    JSON_OPTION,
    OVERWRITE_OPTION,
    QUIET_OPTION,
    SEED_MAX,
    app,
    handle_errors,
)
from susl_cli.cli.train_summary import run_summary, summary_table
from susl_cli.config import (
    GAUSSIAN_SIGMA_RANGE,
    ModelConfig,
    NetworkSettings,
    ObjectiveConfig,
    TrainConfig,
)
from susl_cli.console import make_progress, stdout_console
from susl_cli.cpu_tuning import tune_cpu_for
from susl_cli.discover import DiscoveryOptions
from susl_cli.distributed import (
    DEFAULT_TIMEOUT_S,
    check_batch_sizes,
    join,
    leave,
    world_from_env,
)
from susl_cli.errors import UsageError
from susl_cli.models import MODELS
from susl_cli.runs import ModelOptions, parse_model_options, resolve_device
from susl_cli.sizing import LABEL_EVIDENCE, LARGE_Y_ESTIMATOR, SMALL_MODEL, SMALL_ROWS
from susl_cli.storage.checkpoint import read_checkpoint_meta
from susl_cli.train import train_mask_file, training_device


def _default(config_class: type, name: str) -> str:
    """' [default: X]' read from the config dataclass, so defaults live in one place.

    The bracket is escaped: Typer renders help as rich markup, where [..] is a style tag.
    """
    value = {f.name: f.default for f in dataclasses.fields(config_class)}[name]
    return f" \\[default: {value}]"


def _opt(flag: str, text: str, config_class: type | None = None, name: str = "",
         *aliases: str, **extra: Any) -> object:
    """An option that defaults to None (= "not set": the config or preset decides)."""
    default = _default(config_class, name) if config_class is not None else ""
    return typer.Option(None, flag, *aliases, help=text + default, **extra)


BATCH_MAX = 2**31 - 1  # torch indexes batches with int64; a larger batch is the whole data


def _check_sigma(value: float | None) -> float | None:
    """Fail while parsing (before any data is read), with the range ModelConfig enforces."""
    low, high = GAUSSIAN_SIGMA_RANGE
    if value is not None and not low <= value <= high:
        raise typer.BadParameter(f"{value:g} is outside {low:g}..{high:g}: the data are "
                                 "standardised to sd 1, and a much smaller sigma overflows")
    return value


MODEL_HELP = "Model: " + "; ".join(f"{name} = {cls.description}" for name, cls in MODELS.items())
# the data-size rule (susl_cli/sizing.py) picks the model the user leaves unset
MODEL_DEFAULT = (f" \\[default: {SMALL_MODEL} below {SMALL_ROWS:,} unlabelled rows, else "
                 f"{ModelConfig.model}; --preset paper: {ModelConfig.model}]")


class ProgressObserver:
    """Draws one rich progress bar over all steps of the run, with the latest loss terms.

    The loss shows from the first second (the epoch's running mean), then each finished
    epoch's mean with the labelled accuracy, components used and throughput.
    """

    def __init__(self, quiet: bool) -> None:
        self.progress = make_progress(quiet)
        self.task = None
        self.last_epoch = ""
        self.notice = ""  # one line for stderr once training starts (after every check passed)

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        if self.notice:
            sys.stderr.write(self.notice + "\n")
            self.notice = ""
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("training", total=(epochs - epoch + 1) * steps,
                                               info="")
        self.progress.update(self.task, description=f"epoch {epoch}/{epochs}")

    def steps_done(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def running_loss(self, loss: float) -> None:
        """The epoch's mean loss so far, then the last finished epoch's other figures."""
        last = f", {self.last_epoch}" if self.last_epoch else ""
        self.progress.update(self.task, info=f"loss {loss:.2f} so far{last}")

    def epoch_finished(self, record: dict[str, float]) -> None:
        parts = []
        acc = record.get("train_labelled_acc", math.nan)
        if not math.isnan(acc):
            parts.append(f"labelled acc {acc:.3f}")
        used = record.get("components_used", math.nan)
        if not math.isnan(used):
            parts.append(f"used {used:.0f}")
        parts.append(f"{record['samples_per_s']:.0f}/s")
        self.last_epoch = ", ".join(parts)
        self.progress.update(self.task, info=f"loss {record['loss']:.2f}, {self.last_epoch}")

    def close(self, interrupted: bool = False) -> None:
        """Stop the bar; after Ctrl-C or an error, clear it so only the one-line message shows."""
        if self.task is None:  # a never-started bar would still print a blank line
            return
        live = getattr(self.progress, "live", None)
        if interrupted and live is not None:
            live.transient = True
        self.progress.stop()


@app.command()
@handle_errors
def train(
    mask_file: Path = typer.Argument(..., help="Masked dataset made by `susl mask`."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write (.h5)."),
    model: str = _opt("--model", MODEL_HELP + MODEL_DEFAULT, None, "", "-m"),
    epochs: int = _opt("--epochs", "Epochs (passes over the unlabelled data)", TrainConfig,
                       "epochs"),
    seed: int = _opt("--seed", "Seed for initialisation, batches and sampling", TrainConfig,
                     "seed", min=0, max=SEED_MAX),
    device: str = DEVICE_OPTION,
    preset: str = _opt("--preset", "'paper': Table A.1 sizes, batch and learning rate for "
                       "mnist, fashion-mnist or har, 40 extra components and the paper's "
                       "objective (no marginal KL) \\[default: settings "
                       "chosen by data size, listed in the summary]."),
    extra_components: int = _opt("--extra-components", "Components offered to hidden classes "
                                 "\\[default: 40 if some class has no labels, else 0; 0 on a "
                                 "SUS mask = accidental SUS]."),
    latent_dim: int = _opt("--latent-dim", "Size of z", NetworkSettings, "latent_dim"),
    hidden_units: int = _opt("--hidden-units", "Units per hidden layer", NetworkSettings,
                             "hidden_units"),
    model_option: list[str] = typer.Option(
        None, "--model-option", help="KEY=VALUE: a setting of the chosen model's settings "
        "dataclass (e.g. latent_dim=10); repeatable"),
    batch_size: int = _opt("--batch-size", "Unlabelled points per step", TrainConfig,
                           "batch_size", max=BATCH_MAX),
    labelled_batch_size: int = _opt("--labelled-batch-size", "Labelled points per step",
                                    TrainConfig, "labelled_batch_size", max=BATCH_MAX),
    learning_rate: float = _opt("--learning-rate", "Adam step size", TrainConfig,
                                "learning_rate", "--lr"),
    lr_schedule: str = _opt("--lr-schedule", "cosine or constant", TrainConfig, "lr_schedule"),
    alpha: float = _opt("--alpha", "Weight of the labelled cross-entropy", ObjectiveConfig,
                        "alpha"),
    marginal_kl: float = _opt("--marginal-kl", "Extra weight on KL(batch-mean q(y|x) || p(y)); "
                              "0 = the paper's objective. Try 1 when few components are used "
                              "(HAR: 4 -> 40 of 43)", ObjectiveConfig, "marginal_kl"),
    labelled_share_cap: float = _opt("--labelled-share-cap", "Merge guard: while a labelled "
                                     "component holds more than this multiple of its prior "
                                     "share, push unlabelled mass out of it (try 1.15); 0 = off",
                                     ObjectiveConfig, "labelled_share_cap"),
    label_evidence: float = _opt("--label-evidence", "Weight of a known/new target for each "
                                 "unlabelled row, estimated from your labelled rows (a "
                                 "labelled-vs-unlabelled classifier): rows unlike every "
                                 "labelled class are pushed out of the labelled components, "
                                 "so a new class that looks like a labelled one is not "
                                 f"absorbed; 0 = off \\[default: {LABEL_EVIDENCE:g} when some "
                                 "classes are labelled and new ones may exist; 0 with --preset "
                                 "paper]"),
    y_estimator: str = _opt("--y-estimator", "enumerate (exact sum over components), gumbel "
                            "(one sample) or topk (the --y-topk most probable components "
                            "summed, one drawn from the rest: unbiased, ~(k+1)/K the cost) "
                            f"\\[default: {LARGE_Y_ESTIMATOR} from {SMALL_ROWS:,} unlabelled "
                            f"rows, else {ObjectiveConfig.y_estimator}; --preset paper: "
                            f"{ObjectiveConfig.y_estimator}]"),
    y_topk: int = _opt("--y-topk", "Components summed exactly by --y-estimator topk",
                       ObjectiveConfig, "y_topk"),
    gumbel_temperature: float = _opt("--gumbel-temperature", "Gumbel-softmax temperature",
                                     ObjectiveConfig, "gumbel_temperature"),
    kl: str = _opt("--kl", "analytic or sampled KL for z", ObjectiveConfig, "kl"),
    grad_clip: float = _opt("--grad-clip", "Clip gradients elementwise to \\[-c, c]; 0 = off",
                            TrainConfig, "grad_clip"),
    weight_decay: float = _opt("--weight-decay", "Adam weight decay", TrainConfig,
                               "weight_decay"),
    likelihood: str = _opt("--likelihood", "bernoulli or gaussian \\[default: bernoulli for "
                           "images, else gaussian]."),
    gaussian_sigma: float = _opt("--gaussian-sigma", "Fixed std of the Gaussian likelihood on "
                                 "standardised data, 1e-6..1e6", ModelConfig,
                                 "gaussian_sigma", callback=_check_sigma),
    input_features: str = _opt("--input-features", "raw, or window-stats for time-series "
                               "windows (channels x steps): per-channel statistics, spectral "
                               "band energies and channel correlations \\[default: the mask "
                               "file's choice (susl mask --input-features), else raw]."),
    init: str = _opt("--init", "reference (Glorot hidden, N(0,1e-6) heads) or paper (all "
                     "N(0,1e-6))", ModelConfig, "init"),
    labelled_mass: float = _opt("--labelled-mass", "Prior mass p(y) of the labelled classes "
                                "\\[default: estimated from the mask]."),
    checkpoint_every: int = _opt("--checkpoint-every", "At least this many epochs between "
                                 "checkpoint writes", TrainConfig, "checkpoint_every"),
    checkpoint_seconds: float = _opt("--checkpoint-seconds", "At least this many seconds "
                                     "between checkpoint writes (0: every epoch); the last "
                                     "epoch and Ctrl-C always write, so a kill loses at most "
                                     "this long plus one epoch", TrainConfig,
                                     "checkpoint_seconds"),
    no_new_classes: bool = typer.Option(
        False, "--no-new-classes", help="The labelled classes are all there is: no extra "
        "components (same as --extra-components 0)."),
    new_classes: int = typer.Option(
        None, "--new-classes", help="How many new classes to group the extra components into "
        r"after training \[default: estimated; `susl discover` can redo it]."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the interrupted run in OUT. On a finished run, "
        "--resume --epochs N trains on to N epochs in total with a warm restart: the learning "
        "rate restarts at its base value and decays along a new cosine over the added epochs."),
    stream: bool = typer.Option(
        None, "--stream/--no-stream", help="--stream leaves the unlabelled rows in the mask "
        "file and reads each batch from it (block-shuffled: blocks of one HDF5 chunk of rows "
        "in random order, rows shuffled within a few blocks), for data larger than memory; "
        "--no-stream loads them \\[default: streamed only when the rows would take more than "
        "half the free memory; the summary's data line says which]."),
    dist_timeout: float = typer.Option(
        DEFAULT_TIMEOUT_S, "--dist-timeout", help="Under torchrun: seconds a process waits for "
        "the others at a collective before it stops with one line (a dead or stuck process)."),
    overwrite: bool = OVERWRITE_OPTION,
    quiet: bool = QUIET_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Train a model on a masked dataset; Ctrl-C saves, --resume continues.

    Example: susl train mnist-sus.h5 --model gmdgm --epochs 50 --out run.h5

    Over N processes (one model, DistributedDataParallel; --batch-size is the global batch):
    torchrun --nproc_per_node N -m susl_cli train mnist-sus.h5 --out run.h5
    """
    overrides = {k: v for k, v in dict(
        epochs=epochs, seed=seed, batch_size=batch_size, labelled_batch_size=labelled_batch_size,
        learning_rate=learning_rate, lr_schedule=lr_schedule, alpha=alpha,
        marginal_kl=marginal_kl, labelled_share_cap=labelled_share_cap,
        label_evidence=label_evidence, y_estimator=y_estimator, y_topk=y_topk,
        gumbel_temperature=gumbel_temperature, kl=kl,
        grad_clip=grad_clip, weight_decay=weight_decay, checkpoint_every=checkpoint_every,
        checkpoint_seconds=checkpoint_seconds,
    ).items() if v is not None}
    if no_new_classes:
        if extra_components not in (None, 0):
            raise UsageError("--no-new-classes means no extra components: drop "
                             "--extra-components")
        extra_components = 0
    discovery = DiscoveryOptions(n_new=new_classes)
    notice = _check_epochs_on_resume(out, epochs) if resume and epochs is not None else ""
    settings = {k: v for k, v in dict(latent_dim=latent_dim, hidden_units=hidden_units).items()
                if v is not None}
    options = ModelOptions(model=model, extra_components=extra_components,
                           settings={**settings, **parse_model_options(model_option or ())},
                           likelihood=likelihood, gaussian_sigma=gaussian_sigma,
                           input_features=input_features, init=init, labelled_mass=labelled_mass)
    tune_cpu_for(device)  # process-wide: the CLI opts in, a library caller of fit() does not
    world = world_from_env(timeout_s=dist_timeout)  # torchrun's processes, or just this one
    check_batch_sizes(world, batch_size, labelled_batch_size)  # before waiting for the others
    quiet = quiet or not world.is_main  # progress, notices and the summary: process 0 only
    observer = ProgressObserver(quiet or as_json)
    observer.notice = "" if quiet else notice
    try:
        world = join(world, training_device(world, resolve_device(device), device))
        run = train_mask_file(mask_file, out, options=options, train_overrides=overrides,
                              preset=preset, device=device, resume=resume, overwrite=overwrite,
                              observer=observer, discovery=discovery, world=world,
                              stream=stream)
    except BaseException:
        observer.close(interrupted=True)
        raise
    finally:
        leave(world)
    observer.close()
    if not world.is_main:
        return
    summary = run_summary(run, out, world)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        stdout_console().print(summary_table(summary))


def _check_epochs_on_resume(out: Path, epochs: int) -> str:
    """Refuse a new length for an interrupted run (finish it or not?); state a warm restart."""
    if not out.is_file():
        return ""  # train_mask_file says there is nothing to resume
    meta = read_checkpoint_meta(out)
    done, planned = int(meta["epoch"]), int(meta["train_config"]["epochs"])
    if not meta.get("completed") and epochs != planned:
        raise UsageError(
            f"{str(out)!r} stopped at epoch {done} of a {planned}-epoch schedule: --resume "
            f"finishes that schedule (drop --epochs); to train longer, finish it, then "
            f"--resume --epochs N (a warm restart)")
    if not (meta.get("completed") and epochs > done):
        return ""
    lr = meta["train_config"].get("learning_rate")
    return (f"extending a finished {done}-epoch run to {epochs} epochs: warm restart, the "
            f"learning rate restarts at {lr:g} and decays along a new cosine over the "
            f"{epochs - done} added epochs")
