"""`susl train`: fit a model to a mask file, with progress, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from susl_cli.cli.common import (
    DEVICE_OPTION,
    JSON_OPTION,
    OVERWRITE_OPTION,
    QUIET_OPTION,
    SEED_MAX,
    app,
    handle_errors,
)
from susl_cli.cli.data_commands import INFO_HANDLERS
from susl_cli.config import GAUSSIAN_SIGMA_RANGE, ModelConfig, TrainConfig
from susl_cli.console import discovered_classes_text, make_progress, stdout_console
from susl_cli.discover import DiscoveryOptions
from susl_cli.errors import UsageError
from susl_cli.models import MODELS
from susl_cli.runs import ModelOptions, Run
from susl_cli.storage.checkpoint import read_checkpoint_meta
from susl_cli.storage.h5 import KIND_CHECKPOINT
from susl_cli.train import train_mask_file


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
    model: str = _opt("--model", MODEL_HELP, ModelConfig, "model", "-m"),
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
    latent_dim: int = _opt("--latent-dim", "Size of z", ModelConfig, "latent_dim"),
    hidden_units: int = _opt("--hidden-units", "Units per hidden layer", ModelConfig,
                             "hidden_units"),
    batch_size: int = _opt("--batch-size", "Unlabelled points per step", TrainConfig,
                           "batch_size", max=BATCH_MAX),
    labelled_batch_size: int = _opt("--labelled-batch-size", "Labelled points per step",
                                    TrainConfig, "labelled_batch_size", max=BATCH_MAX),
    learning_rate: float = _opt("--learning-rate", "Adam step size", TrainConfig,
                                "learning_rate", "--lr"),
    lr_schedule: str = _opt("--lr-schedule", "cosine or constant", TrainConfig, "lr_schedule"),
    alpha: float = _opt("--alpha", "Weight of the labelled cross-entropy", TrainConfig,
                        "alpha"),
    marginal_kl: float = _opt("--marginal-kl", "Extra weight on KL(batch-mean q(y|x) || p(y)); "
                              "0 = the paper's objective. Try 1 when few components are used "
                              "(HAR: 4 -> 40 of 43)", TrainConfig, "marginal_kl"),
    labelled_share_cap: float = _opt("--labelled-share-cap", "Merge guard: while a labelled "
                                     "component holds more than this multiple of its prior "
                                     "share, push unlabelled mass out of it (try 1.15); 0 = off",
                                     TrainConfig, "labelled_share_cap"),
    y_estimator: str = _opt("--y-estimator", "enumerate (exact sum over components) or gumbel "
                            "(one sample)", TrainConfig, "y_estimator"),
    gumbel_temperature: float = _opt("--gumbel-temperature", "Gumbel-softmax temperature",
                                     TrainConfig, "gumbel_temperature"),
    kl: str = _opt("--kl", "analytic or sampled KL for z", TrainConfig, "kl"),
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
    overwrite: bool = OVERWRITE_OPTION,
    quiet: bool = QUIET_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Train a model on a masked dataset; Ctrl-C saves, --resume continues.

    Example: susl train mnist-sus.h5 --model gmdgm --epochs 50 --out run.h5
    """
    overrides = {k: v for k, v in dict(
        epochs=epochs, seed=seed, batch_size=batch_size, labelled_batch_size=labelled_batch_size,
        learning_rate=learning_rate, lr_schedule=lr_schedule, alpha=alpha,
        marginal_kl=marginal_kl, labelled_share_cap=labelled_share_cap,
        y_estimator=y_estimator, gumbel_temperature=gumbel_temperature, kl=kl,
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
    options = ModelOptions(model=model, extra_components=extra_components, latent_dim=latent_dim,
                           hidden_units=hidden_units, likelihood=likelihood,
                           gaussian_sigma=gaussian_sigma, input_features=input_features,
                           init=init, labelled_mass=labelled_mass)
    observer = ProgressObserver(quiet or as_json)
    observer.notice = "" if quiet else notice
    try:
        run = train_mask_file(mask_file, out, options=options, train_overrides=overrides,
                              preset=preset, device=device, resume=resume, overwrite=overwrite,
                              observer=observer, discovery=discovery)
    except BaseException:
        observer.close(interrupted=True)
        raise
    observer.close()
    summary = _summary(run, out)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        stdout_console().print(_summary_table(summary))


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


def _summary(run: Run, out: Path) -> dict:
    last = {k: v[-1] for k, v in run.history.items() if v}
    return {
        "checkpoint": str(out), "model": run.model_config.model, "epochs": run.epoch,
        "n_components": run.model_config.n_components, "seed": run.train_config.seed,
        "marginal_kl": run.train_config.marginal_kl,
        "labelled_share_cap": run.train_config.labelled_share_cap,
        "lr_schedule": run.train_config.lr_schedule,
        "lr_cycle_start": run.train_config.lr_cycle_start,
        "final": {k: (None if isinstance(v, float) and math.isnan(v) else v)
                  for k, v in last.items()},
        "total_seconds": float(sum(run.history.get("seconds", []))),
        "label_source": run.meta.get("label_source", "masked"),
        "discovery": run.meta.get("discovery"),
        "chosen": list(run.meta.get("auto_choice") or []),
    }


def _marginal_kl_hint(marginal_kl: float) -> str:
    """The next thing to try: --marginal-kl 1, or (already on) a longer run or a higher weight."""
    if marginal_kl > 0:
        return f"already trained with --marginal-kl {marginal_kl:g}: train longer or raise it"
    return "try --marginal-kl 1"


def _components_used_text(used: float | None, n_components: int, marginal_kl: float = 0.0
                          ) -> str:
    """k of K on the unlabelled training points, with a hint when most lie idle."""
    if used is None:
        return "n/a"
    text = f"{used:.0f} of {n_components} (argmax q(y|x) on unlabelled training points)"
    if used < n_components / 4:
        text += f"; many idle: {_marginal_kl_hint(marginal_kl)}"
    return text


# Healthy MNIST SUS runs measured 1.04-1.06; a run whose labelled 4s had absorbed the hidden
# 9s measured 1.47 (README "Choices").
LABELLED_SHARE_WARNING = 1.25


def _labelled_share_text(ratio: float | None, marginal_kl: float = 0.0, cap: float = 0.0
                         ) -> str:
    """The largest labelled component's share of the training points over its prior share."""
    if ratio is None:
        return "n/a (no labelled class)"
    text = f"{ratio:.2f}x its prior share (largest over labelled components)"
    if ratio > LABELLED_SHARE_WARNING:
        guard = (f"the merge guard (cap {cap:g}) has not brought it down yet: train longer"
                 if cap else "try the merge guard (--labelled-share-cap 1.15)")
        text += (f"; a hidden class may be merging into a labelled one: {guard}; "
                 f"{_marginal_kl_hint(marginal_kl)}")
    return text


def _schedule_text(s: dict) -> str:
    if s["lr_schedule"] != "cosine":
        return s["lr_schedule"]
    if s["lr_cycle_start"]:
        return (f"cosine to 0 over epochs 1-{s['lr_cycle_start']}, then a warm restart: a new "
                f"cosine over epochs {s['lr_cycle_start'] + 1}-{s['epochs']}")
    return f"cosine to 0 over {s['epochs']} epochs"


def _summary_table(s: dict) -> Table:
    table = Table(title="susl train", show_header=False)
    final = s["final"]
    acc = final.get("train_labelled_acc")
    rows = [("checkpoint", s["checkpoint"]), ("model", s["model"]),
            ("components K", str(s["n_components"])),
            ("components used", _components_used_text(final.get("components_used"),
                                                      s["n_components"], s["marginal_kl"])),
            ("labelled share", _labelled_share_text(final.get("labelled_share_ratio"),
                                                    s["marginal_kl"],
                                                    s.get("labelled_share_cap", 0.0))),
            ("new classes", discovered_classes_text(s.get("discovery"))),
            ("epochs", str(s["epochs"])),
            ("learning rate", _schedule_text(s)),
            ("final loss", f"{final.get('loss', float('nan')):.3f}"),
            ("labelled-train accuracy", "n/a" if acc is None else f"{100 * acc:.1f}%"),
            ("throughput", f"{final.get('samples_per_s', 0):.0f} samples/s"),
            ("training time", f"{s['total_seconds']:.1f} s"),
            ("chosen for you", "\n".join(s["chosen"]) or "nothing (preset or your options)"),
            ("next", f"susl evaluate {s['checkpoint']}")]
    for key, value in rows:
        table.add_row(key, value)
    return table


def _describe_checkpoint(path: Path) -> dict:
    meta = read_checkpoint_meta(path)
    return {"file": str(path), "kind": "checkpoint", **meta}


def _checkpoint_table(s: dict) -> Table:
    table = Table(title="checkpoint", show_header=False)
    mc, tc = s.get("model_config", {}), s.get("train_config", {})
    rows = [
        ("file", s["file"]), ("model", s.get("model", "?")),
        ("trained on", f"{s.get('mask_file')} ({s.get('dataset')}, {s.get('regime')})"),
        ("mask sha256", f"{str(s.get('mask_sha256', ''))[:16]}..."),
        ("epochs", f"{s.get('epoch')} of {tc.get('epochs')}"
                   + (" (finished)" if s.get("completed") else " (resumable)")),
        ("components K", f"{mc.get('n_components')} ({mc.get('n_labelled')} labelled)"),
        ("new classes", discovered_classes_text(s.get("discovery"))),
        ("latent / hidden", f"{mc.get('latent_dim')} / {mc.get('hidden_units')}"),
        ("likelihood", str(mc.get("likelihood"))),
        ("input features", str(mc.get("input_features", "raw"))), ("seed", str(s.get("seed"))),
        ("susl version", str(s.get("susl_version"))),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


INFO_HANDLERS[KIND_CHECKPOINT] = (_describe_checkpoint, _checkpoint_table)
