"""`susl report`: one HTML or Markdown page with a run's settings, tables and figures."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from susl_cli.cli.common import (
    DEVICE_OPTION,
    JSON_OPTION,
    OVERWRITE_OPTION,
    QUIET_OPTION,
    SEED_OPTION,
    app,
    handle_errors,
)


@app.command()
@handle_errors
def report(
    run: Path = typer.Argument(..., metavar="RUN", help="A checkpoint from `susl train`."),
    out: Path = typer.Option(..., "--out", "-o", help="report.html or report.md to write "
                             "(figures embedded: one file is the whole report)."),
    data: Path = typer.Option(None, "--data", help="Score this mask file's test set instead "
                              "of the one the run was trained on."),
    seed: int = SEED_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    device: str = DEVICE_OPTION,
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Write one page about a run: settings, metrics, confusion matrix, samples, curves.

    The page holds the run's settings, its metric table, the true x mapped class confusion
    matrix (table and figure), the sample grid (image data), the entropy plot of q(y|x)
    (paper Fig 2) and the training curves, scored on the test set of the run's mask file.

    Example: susl report run.h5 --out report.html
    """
    from susl_cli.run_report import write_run_report

    summary = write_run_report(run, out, data=data, device=device, seed=seed,
                               overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        typer.echo(f"wrote {out}: {', '.join(summary['sections'])}")
