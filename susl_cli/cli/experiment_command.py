"""`susl experiment`: reproduce the paper's Table 1 or Table 2 as a resumable grid of runs."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from susl_cli.cli.common import (
    DATA_DIR_OPTION,
    DEVICE_OPTION,
    JSON_OPTION,
    QUIET_OPTION,
    app,
    handle_errors,
)
from susl_cli.console import make_progress, stdout_console
from susl_cli.cpu_tuning import tune_cpu_for
from susl_cli.data.masking import DEFAULT_LABEL_FRACTION
from susl_cli.experiment import (
    ExperimentConfig,
    RunOutcome,
    parse_names,
    parse_settings,
    run_experiment,
)
from susl_cli.experiment_report import (
    HEADLINE,
    PAPER_EPOCHS,
    REGIME_TITLES,
    Cell,
    Report,
    format_mean_sd,
    format_paper,
    write_reports,
)
from susl_cli.models import MODELS, model_title

_SHORT_REGIMES = {"ss_known": "SS-known", "acc_sus": "acc-SUS"}
_VERBS = {"train": "trained", "resume": "resumed", "extend": "extended", "skip": "already done"}


def _default(name: str) -> str:
    """' [default: X]' read from ExperimentConfig, so defaults live in one place."""
    value = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}[name]
    return f" \\[default: {value}]"


class GridProgress:
    """One rich bar over the runs of the grid (done / total), naming the last one finished."""

    def __init__(self, quiet: bool) -> None:
        self.progress = make_progress(quiet)
        self.task: Any = None

    def planned(self, total: int, to_train: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task(f"runs ({to_train} to train)", total=total, info="")

    def run_finished(self, outcome: RunOutcome) -> None:
        self.progress.advance(self.task)
        if outcome.error is not None:
            info = f"{outcome.run.name}: failed"
        else:
            info = f"{outcome.run.name}: {_VERBS[outcome.action]} ({outcome.seconds:.0f} s)"
        self.progress.update(self.task, info=info)

    def close(self) -> None:
        if self.task is not None:  # stopping a bar never started would print a blank line
            self.progress.stop()


@app.command()
@handle_errors
def experiment(
    table: str = typer.Argument(..., help="table2: {US, SS, SUS} x models x seeds; table1: SS "
                                "on the labelled classes only vs accidental SUS (M2)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="mnist, fashion-mnist, har, "
                                "har-features, or the path of your own .npz / .csv / .h5 "
                                "with a test set."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the masks, checkpoints and "
                             "tables (created if missing; rerun with the same --out to resume)."),
    seeds: int = typer.Option(None, "--seeds", help="Runs per cell; seed k is the mask and "
                              "training seed" + _default("seeds")),
    epochs: int = typer.Option(None, "--epochs", help="Epochs per run" + _default("epochs")),
    models: str = typer.Option(None, "--models", help="Comma-separated models, any of "
                               f"{', '.join(MODELS)} \\[default: m2,gmdgm for table2, m2 "
                               "for table1]."),
    regimes: str = typer.Option(None, "--regimes", help="Comma-separated: us, ss, sus (table2) "
                                "or ss-known, acc-sus (table1) \\[default: all of the table's]."),
    label_fraction: float = typer.Option(None, "--label-fraction", help="Fraction of each "
                                         "labelled class with labels" +
                                         _default("label_fraction")),
    preset: str = typer.Option(None, "--preset", help="auto (the paper's Table A.1 sizes where "
                               "it has the dataset), paper or default" + _default("preset")),
    jobs: int = typer.Option(None, "--jobs", "-j", help="Runs trained in parallel processes, "
                             "each with cores/jobs threads \\[default: one per GPU on CUDA, "
                             "else 1]. On CUDA (--device cuda, or auto with a GPU) with G GPUs, "
                             "process slot s trains on cuda:(s mod G): --jobs 4 on 2 GPUs puts "
                             "2 runs on each; --device cuda:N puts every run on GPU N."),
    settings: list[str] = typer.Option(None, "--set", help="KEY=VALUE training or model option "
                                       "for every run, e.g. alpha=10 or hidden_units=500 "
                                       "(repeatable)."),
    batch_seeds: bool = typer.Option(False, "--batch-seeds", help="Train each cell's seeds "
                                     "as one batched model in one process (each seed's "
                                     "results as if trained alone, to float rounding)."),
    device: str = DEVICE_OPTION,
    data_dir: Path = DATA_DIR_OPTION,
    quiet: bool = QUIET_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Train, score and tabulate a paper table: mean ± sd next to the paper's numbers.

    Writes OUT/<table>_<dataset>.csv (one row per run) and .md (the table, the command,
    epochs, hardware and time). Finished runs are skipped and interrupted ones resumed, so
    rerunning the same command finishes a partial grid.

    Example: susl experiment table2 --dataset mnist --seeds 4 --epochs 50 --jobs 2 --out results
    """
    given = {"seeds": seeds, "epochs": epochs, "label_fraction": label_fraction,
             "preset": preset, "jobs": jobs, "data_dir": data_dir}
    config = ExperimentConfig(
        table=table.strip().lower(), dataset=dataset, out_dir=out, device=device,
        models=parse_names(models, dash="-"), regimes=parse_names(regimes),
        settings=parse_settings(settings or []), batch_seeds=batch_seeds,
        **{k: v for k, v in given.items() if v is not None})
    observer = GridProgress(quiet or as_json)
    tune_cpu_for(config.device)  # process-wide: the CLI opts in, as `susl train` does
    try:
        result = run_experiment(config, observer)
    finally:
        observer.close()
    report = write_reports(result, command_line(config, len(result.slots)))
    if as_json:
        typer.echo(json.dumps(_payload(config, result.rows, report, result.wall_seconds),
                              indent=2, allow_nan=False))
    elif not quiet:
        _render(config, report, result.rows)


def command_line(config: ExperimentConfig, jobs: int) -> str:
    """The command, spelt out in full, that reproduces this grid (written into the report);
    `jobs`: the processes it ran with (the default depends on the machine's GPUs)."""
    parts = ["susl", "experiment", config.table, "--dataset", config.dataset,
             "--seeds", str(config.seeds), "--epochs", str(config.epochs),
             "--models", ",".join(config.model_names),
             "--regimes", ",".join(r.replace("_", "-") for r in config.regime_names)]
    if config.label_fraction != DEFAULT_LABEL_FRACTION:
        parts += ["--label-fraction", f"{config.label_fraction:g}"]
    if config.preset != "auto":
        parts += ["--preset", config.preset]
    parts += ["--jobs", str(jobs), "--device", config.device, "--out", str(config.out_dir)]
    if config.data_dir is not None:
        parts += ["--data-dir", str(config.data_dir)]
    for key, value in config.settings:
        parts += ["--set", f"{key}={value}"]
    if config.batch_seeds:
        parts.append("--batch-seeds")
    return shlex.join(parts)


def _none_for_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _payload(config: ExperimentConfig, rows: list[dict[str, Any]], report: Report,
             wall_seconds: float) -> dict[str, Any]:
    cells = [{"model": c.model, "regime": c.regime, "runs": c.n_runs,
              "paper": list(c.paper) if c.paper else None,
              "metrics": {k: {"mean": _none_for_nan(m), "sd": _none_for_nan(s)}
                          for k, (m, s) in c.stats.items()}} for c in report.cells]
    return {"table": config.table, "dataset": config.dataset_key, "epochs": config.epochs,
            "seeds": config.seeds, "headline_metric": HEADLINE[config.table],
            "csv": str(report.csv_path), "markdown": str(report.markdown_path),
            "run_dir": str(config.run_dir), "wall_seconds": round(wall_seconds, 2),
            "cells": cells,
            "runs": [{k: _none_for_nan(v) for k, v in row.items()} for row in rows]}


def _cells_table(config: ExperimentConfig, cells: list[Cell]) -> Table:
    headline = HEADLINE[config.table]
    table = Table(title=f"{config.table} on {config.dataset_key} (mean ± sd over seeds, %)",
                  title_justify="left")
    for column in ("model", "regime", "runs"):
        table.add_column(column)
    table.add_column("measured", justify="right", style="bold")
    table.add_column("paper", justify="right")
    for column in ("Hungarian", "known", "novel", "NMI"):
        table.add_column(column, justify="right")
    for c in cells:
        regime = _SHORT_REGIMES.get(c.regime, REGIME_TITLES[c.regime])
        table.add_row(model_title(c.model), regime,
                      str(c.n_runs), format_mean_sd(*c.stats[headline]), format_paper(c.paper),
                      *(format_mean_sd(*c.stats[k]) for k in (
                          "cluster_acc_hungarian", "known_acc_classifier",
                          "novel_acc_majority", "nmi")))
    return table


def _render(config: ExperimentConfig, report: Report, rows: list[dict[str, Any]]) -> None:
    console = stdout_console()
    console.print(_cells_table(config, report.cells))
    shortest = min(int(r["epochs"]) for r in rows)
    if shortest < PAPER_EPOCHS:
        console.print(f"reduced run: {shortest} epoch(s), not the paper's {PAPER_EPOCHS}")
    console.print(f"wrote {report.csv_path} and {report.markdown_path}; checkpoints in "
                  f"{config.run_dir}")
