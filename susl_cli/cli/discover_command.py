"""`susl discover`: group a run's extra components into named new classes, again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from susl_cli.cli.common import JSON_OPTION, QUIET_OPTION, app, handle_errors
from susl_cli.discover import METHODS, DiscoveryOptions
from susl_cli.errors import UsageError

_DEFAULTS = DiscoveryOptions()


@app.command()
@handle_errors
def discover(
    run: Path = typer.Argument(..., metavar="RUN", help="A checkpoint from `susl train`."),
    new_classes: int = typer.Option(
        None, "--new-classes", help="Group into exactly N new classes, when you know how many "
        "classes nobody labelled \\[default: estimated from the data]."),
    method: str = typer.Option(
        _DEFAULTS.method, "--method", help="Distance between components: overlap (how often "
        "q(y|x) hesitates between them) or latent (overlap of their latent densities)."),
    min_points: int = typer.Option(
        _DEFAULTS.min_points, "--min-points", help="Components with fewer training points "
        "join the nearest group instead of forming one \\[default 0: 0.1% of the rows, >= 5]."),
    mask: Path = typer.Option(None, "--mask", help="The run's mask file, if it has moved."),
    quiet: bool = QUIET_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Name and count the classes nobody labelled: group the extra components of a run.

    Training already does this once; run it again with other settings. No label of a
    hidden class is read. The result is stored in RUN and used by predict, evaluate,
    sample and info.

    Example: susl discover run.h5;  susl discover run.h5 --new-classes 3
    """
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    options = DiscoveryOptions(method=method, n_new=new_classes, min_points=min_points)
    from susl_cli.discovery_runs import rediscover_checkpoint  # torch: only when run

    discovery = rediscover_checkpoint(run, options, mask)
    summary = {"checkpoint": str(run), **discovery.to_json()}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        Console().print(discovery_table(summary))


def discovery_table(s: dict[str, Any]) -> Table:
    """One row per class the run names: labelled ones, then the discovered ones."""
    n_labelled = int(s["n_labelled"])
    component_class = s["component_class"]
    table = Table(title=f"{s.get('checkpoint', '')}: {len(s['class_names']) - n_labelled} new "
                        f"classes found ({s['method']})", title_justify="left")
    table.add_column("class")
    table.add_column("kind")
    table.add_column("training rows", justify="right")
    table.add_column("components")
    for index, (name, size) in enumerate(zip(s["class_names"], s["sizes"], strict=True)):
        members = [str(j) for j, c in enumerate(component_class) if c == index]
        table.add_row(name, "labelled" if index < n_labelled else "new", f"{int(size):,}",
                      ", ".join(members))
    return table
