"""`susl sample` (sample grids, each component's own points) and `susl predict` (new data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from susl_cli.cli.common import (
    DATA_DIR_OPTION,
    DEVICE_OPTION,
    JSON_OPTION,
    OVERWRITE_OPTION,
    SEED_OPTION,
    app,
    handle_errors,
)
from susl_cli.cli.data_commands import INFO_HANDLERS
from susl_cli.predict import PredictOptions, predict_to_file
from susl_cli.sample import SampleOptions, sample_to_file
from susl_cli.storage.outputs import KIND_SAMPLES, describe_samples

_SAMPLE = SampleOptions()  # defaults live in the library's options, not here
_PREDICT = PredictOptions()

# Rich help keeps single line breaks, so each paragraph is one string.
SAMPLE_HELP = "\n\n".join((
    "Draw what each component generates: the mean of p(x|y,z), rows = shared z draws.",
    "Columns are components y, titled with their class (a labelled class or a discovered "
    "new-i) and index; every row uses one "
    "standard-normal draw eps shared across columns (M2: the same z; GM-DGM: the same "
    "relative position in each component's Gaussian). Image data gives a PNG; any data can "
    "be written as .csv or .h5 rows (un-standardised, in the layout of the input).",
    "Examples: susl sample run.h5 --out samples.png;  susl sample run.h5 --out own.png "
    "--most-confident --rows 10;  susl sample har-run.h5 --out samples.csv --components 0-5",
))
PREDICT_HELP = "\n\n".join((
    "Classify new data with the model's q(y|x): one CSV row per input row.",
    "Columns: row, component (argmax q(y|x)), probability (its q), entropy (of q(y|x), "
    "nats), class, class_probability, novelty, unlike_labelled.",
    "class: a labelled class name, or new-1 .. new-k for the classes discovered without "
    "labels (`susl info RUN` lists them, `susl discover RUN` regroups them); "
    "class_probability: q(y|x) summed over that class's components. No true label is read.",
    "novelty: the probability that the row belongs to none of the labelled classes (q mass "
    "on the components of new classes).",
    "unlike_labelled: entropy above the --entropy-quantile (default 0.95) of the entropies "
    "of the labelled training points of the run's mask file; the threshold is reported. "
    "Empty when the mask file has no labelled points or is gone.",
    "Examples: susl predict run.h5 new.csv --out predictions.csv;  susl predict run.h5 "
    "mnist-sus.h5 --split train --out train-predictions.csv --json",
))


@app.command(help=SAMPLE_HELP)
@handle_errors
def sample(
    run: Path = typer.Argument(..., metavar="RUN", help="A checkpoint from `susl train`."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="samples.png (image data), or .csv / .h5 for the generated "
        "vectors in input space (columns: component, mapped_class (class name), row, seed, "
        "x0..)."),
    components: str = typer.Option(
        None, "--components", help="Columns to draw, in this order, e.g. 0,3,5-9 or all. "
        "Default: the components used on the test set of the run's mask file, labelled "
        "components first, then extra ones by discovered class."),
    rows: int = typer.Option(_SAMPLE.rows, "--rows", help="z draws per column (or points "
                             "per component with --most-confident)."),
    seed: int = SEED_OPTION,
    most_confident: bool = typer.Option(
        False, "--most-confident", help="Show the test points most confidently assigned to "
        "each component instead of generated means (paper Fig 4b)."),
    data: Path = typer.Option(None, "--data", help="Mask file whose test set orders and names "
                              "the columns (default: the one the run was trained on)."),
    overwrite: bool = OVERWRITE_OPTION,
    device: str = DEVICE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Parse, call `sample_to_file`, print what was written (help text: SAMPLE_HELP)."""
    options = SampleOptions(components=components, rows=rows, seed=seed,
                            most_confident=most_confident, data=data, device=device)
    summary = sample_to_file(run, out, options, overwrite)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    size = f", {summary['pixels'][1]}x{summary['pixels'][0]} px" if summary["pixels"] else ""
    typer.echo(f"wrote {out}: {summary['rows']} rows x {len(summary['components'])} "
               f"components ({summary['mode']}, seed {seed}{size})")
    typer.echo("columns (component: class): " + ", ".join(
        f"{c}: {name}" for c, name in zip(summary["components"], summary["mapped_classes"],
                                          strict=True)))
    typer.echo(summary["caption"])


@app.command(help=PREDICT_HELP)
@handle_errors
def predict(
    run: Path = typer.Argument(..., metavar="RUN", help="A checkpoint from `susl train`."),
    data: str = typer.Argument(
        ..., metavar="INPUT", help="Data to classify: your .npz / .h5 (array x; labels "
        "ignored) or .csv (numeric features; a label column is dropped), a susl mask file, "
        "or a dataset name (mnist, fashion-mnist, har)."),
    out: Path = typer.Option(..., "--out", "-o", help="predictions.csv to write."),
    split: str = typer.Option(
        _PREDICT.split, "--split", help="auto: a mask file's or dataset's test set, a user "
        "file's x; train: the mask's training inputs / x; test: the test set / x_test."),
    entropy_quantile: float = typer.Option(
        _PREDICT.entropy_quantile, "--entropy-quantile", help="Rows whose entropy of q(y|x) "
        "is above this quantile of the labelled training points' entropies are flagged."),
    mask: Path = typer.Option(None, "--mask", help="The run's mask file, if it has moved "
                              "since training (names extra components, calibrates the flag)."),
    label_column: str = typer.Option(_PREDICT.label_column, "--label-column",
                                     help="CSV input: the label column to drop, if present."),
    data_dir: Path = DATA_DIR_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    device: str = DEVICE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Parse, call `predict_to_file`, print a summary (help text: PREDICT_HELP)."""
    options = PredictOptions(split=split, entropy_quantile=entropy_quantile, mask=mask,
                             data_dir=data_dir, label_column=label_column, device=device)
    predictions = predict_to_file(run, data, out, options, overwrite)
    summary = {**predictions.to_dict(), "out": str(out)}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    _render_predictions(summary)


def _render_predictions(s: dict[str, Any]) -> None:
    console = Console()
    console.print(f"wrote {s['out']}: {s['n_rows']} predictions for {s['input']}")
    table = Table(title="rows per class", title_justify="left")
    table.add_column("class")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    for name, count in sorted(s["rows_per_class"].items(), key=lambda kv: -kv[1]):
        table.add_row(name, str(count), f"{100 * count / max(s['n_rows'], 1):.1f}%")
    console.print(table)
    console.print(f"class names: labelled classes by construction; new-1 .. new-"
                  f"{s['n_new_classes']}: discovery {s['mapping_source']}", soft_wrap=True)
    if s["entropy_threshold"] is None:
        console.print(f"unlike_labelled: not computed ({s['threshold_source']})",
                      soft_wrap=True)
    else:
        console.print(f"unlike_labelled: {s['n_unlike_labelled']} rows with entropy > "
                      f"{s['entropy_threshold']:.4g} nats ({s['threshold_source']})",
                      soft_wrap=True)


def _samples_table(s: dict[str, Any]) -> Table:
    table = Table(title="samples", show_header=False)
    columns = s.get("columns", {})
    rows = [("file", s["file"]), ("from checkpoint", str(s.get("checkpoint"))),
            ("mode", f"{s.get('mode')} (seed {s.get('seed')})"),
            ("points", str(columns.get("row", ["?"])[0])),
            ("components", ", ".join(map(str, s.get("components", [])))),
            ("mapped classes", ", ".join(map(str, s.get("mapped_classes", [])))),
            ("arrays", ", ".join(f"{k} {tuple(v)}" for k, v in sorted(columns.items()))),
            ("susl version", str(s.get("susl_version")))]
    for key, value in rows:
        table.add_row(key, value)
    return table


INFO_HANDLERS[KIND_SAMPLES] = (describe_samples, _samples_table)
