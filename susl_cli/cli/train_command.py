"""`susl train`: fit a model to a mask file, with progress, checkpoints and resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from susl_cli.cli.common import (
    DEVICE_OPTION,
    JSON_OPTION,
    OVERWRITE_OPTION,
    QUIET_OPTION,
    app,
    handle_errors,
)
from susl_cli.cli.data_commands import INFO_HANDLERS
from susl_cli.console import make_progress
from susl_cli.models import MODELS
from susl_cli.runs import ModelOptions, Run
from susl_cli.storage.checkpoint import read_checkpoint_meta
from susl_cli.storage.h5 import KIND_CHECKPOINT
from susl_cli.train import train_mask_file

MODEL_HELP = "Model: " + "; ".join(f"{name} = {cls.description}" for name, cls in MODELS.items())


class ProgressObserver:
    """Draws one rich progress bar over all steps of the run, with the latest loss terms."""

    def __init__(self, quiet: bool) -> None:
        self.progress = make_progress(quiet)
        self.task = None
        self.info = ""

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("training", total=(epochs - epoch + 1) * steps,
                                               info="")
        self.progress.update(self.task, description=f"epoch {epoch}/{epochs}")

    def steps_done(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def epoch_finished(self, record: dict[str, float]) -> None:
        acc = record.get("train_labelled_acc", math.nan)
        acc_text = "" if math.isnan(acc) else f" labelled acc {acc:.3f}"
        self.progress.update(self.task, info=f"loss {record['loss']:.2f}{acc_text} "
                                             f"{record['samples_per_s']:.0f} samples/s")

    def close(self) -> None:
        self.progress.stop()


@app.command()
@handle_errors
def train(
    mask_file: Path = typer.Argument(..., help="Masked dataset made by `susl mask`."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write (.h5)."),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP + " [default: gmdgm]"),
    epochs: int = typer.Option(None, "--epochs", help="Epochs (passes over the unlabelled "
                               "data) [default: 400]."),
    seed: int = typer.Option(None, "--seed", help="Seed for initialisation, batches and "
                             "sampling [default: 0]."),
    device: str = DEVICE_OPTION,
    preset: str = typer.Option(None, "--preset", help="'paper': Table A.1 sizes, batch and "
                               "learning rate for mnist, fashion-mnist or har."),
    extra_components: int = typer.Option(None, "--extra-components", help="Components offered "
                                         "to hidden classes [default: 40 if some class has no "
                                         "labels, else 0; 0 on a SUS mask = accidental SUS]."),
    latent_dim: int = typer.Option(None, "--latent-dim", help="Size of z [default: 5]."),
    hidden_units: int = typer.Option(None, "--hidden-units", help="Units per hidden layer "
                                     "[default: 200]."),
    batch_size: int = typer.Option(None, "--batch-size", help="Unlabelled points per step "
                                   "[default: 100]."),
    labelled_batch_size: int = typer.Option(None, "--labelled-batch-size", help="Labelled "
                                            "points per step [default: 100]."),
    learning_rate: float = typer.Option(None, "--learning-rate", "--lr", help="Adam step size "
                                        "[default: 0.001]."),
    lr_schedule: str = typer.Option(None, "--lr-schedule", help="cosine or constant "
                                    "[default: cosine]."),
    alpha: float = typer.Option(None, "--alpha", help="Weight of the labelled cross-entropy "
                                "[default: 50]."),
    y_estimator: str = typer.Option(None, "--y-estimator", help="enumerate (exact sum over "
                                    "components) or gumbel (one sample) [default: enumerate]."),
    gumbel_temperature: float = typer.Option(None, "--gumbel-temperature",
                                             help="Gumbel-softmax temperature [default: 0.5]."),
    kl: str = typer.Option(None, "--kl", help="analytic or sampled KL for z "
                           "[default: analytic]."),
    grad_clip: float = typer.Option(None, "--grad-clip", help="Clip gradients elementwise to "
                                    "[-c, c]; 0 = off [default: 0]."),
    weight_decay: float = typer.Option(None, "--weight-decay", help="Adam weight decay "
                                       "[default: 0]."),
    likelihood: str = typer.Option(None, "--likelihood", help="bernoulli or gaussian "
                                   "[default: bernoulli for images, else gaussian]."),
    gaussian_sigma: float = typer.Option(None, "--gaussian-sigma", help="Fixed std of the "
                                         "Gaussian likelihood on standardised data "
                                         "[default: 1]."),
    init: str = typer.Option(None, "--init", help="reference (Glorot hidden, N(0,1e-6) heads) "
                             "or paper (all N(0,1e-6)) [default: reference]."),
    labelled_mass: float = typer.Option(None, "--labelled-mass", help="Prior mass p(y) of the "
                                        "labelled classes [default: estimated from the mask]."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Epochs between "
                                         "checkpoint writes [default: 1]."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in OUT."),
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
        y_estimator=y_estimator, gumbel_temperature=gumbel_temperature, kl=kl,
        grad_clip=grad_clip, weight_decay=weight_decay, checkpoint_every=checkpoint_every,
    ).items() if v is not None}
    options = ModelOptions(model=model, extra_components=extra_components, latent_dim=latent_dim,
                           hidden_units=hidden_units, likelihood=likelihood,
                           gaussian_sigma=gaussian_sigma, init=init, labelled_mass=labelled_mass)
    observer = ProgressObserver(quiet or as_json)
    try:
        run = train_mask_file(mask_file, out, options=options, train_overrides=overrides,
                              preset=preset, device=device, resume=resume, overwrite=overwrite,
                              observer=observer)
    finally:
        observer.close()
    summary = _summary(run, out)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        Console().print(_summary_table(summary))


def _summary(run: Run, out: Path) -> dict:
    last = {k: v[-1] for k, v in run.history.items() if v}
    return {
        "checkpoint": str(out), "model": run.model_config.model, "epochs": run.epoch,
        "n_components": run.model_config.n_components, "seed": run.train_config.seed,
        "final": {k: (None if isinstance(v, float) and math.isnan(v) else v)
                  for k, v in last.items()},
        "total_seconds": float(sum(run.history.get("seconds", []))),
    }


def _summary_table(s: dict) -> Table:
    table = Table(title="susl train", show_header=False)
    final = s["final"]
    acc = final.get("train_labelled_acc")
    rows = [("checkpoint", s["checkpoint"]), ("model", s["model"]),
            ("components K", str(s["n_components"])), ("epochs", str(s["epochs"])),
            ("final loss", f"{final.get('loss', float('nan')):.3f}"),
            ("labelled-train accuracy", "n/a" if acc is None else f"{100 * acc:.1f}%"),
            ("throughput", f"{final.get('samples_per_s', 0):.0f} samples/s"),
            ("training time", f"{s['total_seconds']:.1f} s"),
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
        ("latent / hidden", f"{mc.get('latent_dim')} / {mc.get('hidden_units')}"),
        ("likelihood", str(mc.get("likelihood"))), ("seed", str(s.get("seed"))),
        ("susl version", str(s.get("susl_version"))),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


INFO_HANDLERS[KIND_CHECKPOINT] = (_describe_checkpoint, _checkpoint_table)
