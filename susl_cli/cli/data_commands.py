"""`susl mask` (make a masked dataset) and `susl info` (describe a susl file)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn
from rich.table import Table

from susl_cli.cli.common import (
    DATA_DIR_OPTION,
    JSON_OPTION,
    OVERWRITE_OPTION,
    QUIET_OPTION,
    SEED_OPTION,
    app,
    handle_errors,
)
from susl_cli.data.download import ProgressCallback
from susl_cli.data.masking import (
    AS_GIVEN_NOTE,
    DEFAULT_LABEL_FRACTION,
    REGIME_NAMES,
    check_class_spec_syntax,
    classes_from_spec,
    make_as_given_dataset,
    make_masked_dataset,
    resolve_label_amount,
    split_off_test,
)
from susl_cli.data.sources import BUILTIN_DATASETS, load_dataset
from susl_cli.errors import FileFormatError, UsageError
from susl_cli.storage.h5 import KIND_MASKED_DATASET, check_output_path, peek_kind
from susl_cli.storage.masked import describe_masked_dataset, write_masked_dataset


@app.command()
@handle_errors
def mask(
    dataset: str = typer.Option(
        ..., "--dataset", "-d",
        help="mnist, fashion-mnist, har (UCI HAR raw inertial windows), har-features (561 "
        "features; needs --download), or the path of your own .npz (x, y[, x_test, y_test]), "
        ".csv (numeric features + a label column) or .h5 (x, y[, x_test, y_test]). "
        "Labels: class names (words or whole numbers); an empty cell, -1 or "
        "--unlabelled-token = unlabelled.",
    ),
    labelled_classes: str | None = typer.Option(
        None, "--labelled-classes", "-l",
        help="Hide labels as the paper does: these classes keep some labels, the rest none. "
        "Examples: 0-4, 0,2,7, 1-3,8, cat,dog, all (semi-supervised), none (unsupervised). "
        "Required for built-in datasets; leave it out for your own partly labelled file to "
        "keep its labels as given (new classes allowed).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Masked-dataset file to write, e.g. mnist-sus.h5.",
    ),
    label_fraction: float | None = typer.Option(
        None, "--label-fraction",
        help="Fraction p in (0, 1] of each labelled class to keep labelled: round(p * n_c) "
        f"examples per class. Default {DEFAULT_LABEL_FRACTION} (the paper's protocol).",
    ),
    labels_per_class: int | None = typer.Option(
        None, "--labels-per-class",
        help="Instead of a fraction: exactly N labelled examples per labelled class, e.g. 100.",
    ),
    seed: int = SEED_OPTION,
    label_column: str = typer.Option(
        "label", "--label-column", help="CSV only: the column holding the labels."
    ),
    unlabelled_token: str | None = typer.Option(
        None, "--unlabelled-token",
        help="A label value that means 'unlabelled', e.g. unknown (besides empty, NaN, -1).",
    ),
    test_fraction: float | None = typer.Option(
        None, "--test-fraction",
        help="For a file without a test split: move this share of rows (0..1, seeded, "
        "stratified over the labels) into a test set that `susl evaluate` scores.",
    ),
    data_dir: Path | None = DATA_DIR_OPTION,
    download: bool = typer.Option(
        False, "--download",
        help="Fetch missing built-in dataset files (into --data-dir, else the user cache), "
        "verifying their checksums.",
    ),
    input_features: str | None = typer.Option(
        None, "--input-features",
        help="Representation training uses for this data (stored in OUT; `susl train "
        "--input-features` overrides it): raw, or window-stats for time-series windows "
        "(per-channel statistics, spectral band energies, channel correlations). "
        "\\[default: raw]",
    ),
    overwrite: bool = OVERWRITE_OPTION,
    json_out: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Hide labels: keep a fraction of the labels of some classes, none of the others.

    Examples:

      susl mask --dataset mnist --labelled-classes 0-4 --out mnist-sus.h5

      susl mask --dataset har --labelled-classes 0-2 --input-features window-stats --out har.h5

      susl mask --dataset har --labelled-classes 0-2 --labels-per-class 50 --seed 1 --out har.h5

      susl mask --dataset mydata.csv --label-column target --test-fraction 0.2 --out my.h5
    """
    # Everything that can be checked without the data is checked first: a bad path or option
    # fails fast and nothing is written.
    check_output_path(out, overwrite, inputs=(Path(dataset),))  # a user file is an input
    fraction, per_class = resolve_label_amount(label_fraction, labels_per_class)
    if labelled_classes is not None:
        check_class_spec_syntax(labelled_classes)
    elif dataset.strip().lower() in BUILTIN_DATASETS:
        raise UsageError(f"{dataset} is fully labelled: give --labelled-classes (e.g. 0-4) to "
                         "choose which classes keep labels")
    elif label_fraction is not None or labels_per_class is not None:
        raise UsageError("--label-fraction and --labels-per-class hide labels of the classes "
                         "in --labelled-classes: give that too, or drop them to keep the "
                         "file's labels as given")
    with _download_progress(enabled=download and not quiet) as progress:
        data = load_dataset(dataset, data_dir=data_dir, download=download,
                            label_column=label_column, progress=progress,
                            unlabelled_token=unlabelled_token)
    data = split_off_test(data, test_fraction, seed)
    if labelled_classes is None:
        masked = make_as_given_dataset(data, seed=seed, input_features=input_features)
    else:
        masked = make_masked_dataset(data, classes_from_spec(labelled_classes, data.class_names),
                                     label_fraction=fraction, labels_per_class=per_class,
                                     seed=seed, input_features=input_features)
    if test_fraction is not None:
        masked = dataclasses.replace(masked, metadata=dataclasses.replace(
            masked.metadata, test_fraction=test_fraction))
    write_masked_dataset(out, masked, overwrite=overwrite)
    _show(describe_masked_dataset(out), _masked_table, json_out, quiet)


# kind -> (describe(path) -> JSON-able dict, render(dict) -> rich Table). Checkpoints plug in here.
INFO_HANDLERS: dict[str, tuple[Callable[[Path], dict[str, Any]],
                               Callable[[dict[str, Any]], Table]]] = {}


@app.command()
@handle_errors
def info(
    file: Path = typer.Argument(..., help="A file made by susl, e.g. mnist-sus.h5."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Describe a susl file: what it is, what it holds and how it was made.

    Example: susl info mnist-sus.h5 --json
    """
    kind = peek_kind(file)
    if kind not in INFO_HANDLERS:
        raise FileFormatError(
            f"{str(file)!r} is a susl {kind} file, which `susl info` cannot describe yet"
        )
    describe, render = INFO_HANDLERS[kind]
    _show(describe(file), render, json_out, quiet=False)


def _show(summary: dict[str, Any], render: Callable[[dict[str, Any]], Table],
          json_out: bool, quiet: bool) -> None:
    if json_out:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    elif not quiet:
        Console().print(render(summary))


def _classes_text(classes: Sequence[int], names: Sequence[str]) -> str:
    """'0, 1, 2' for digits; '0 T-shirt/top, 1 Trouser' when names say more than the id."""
    if not classes:
        return "none"
    return ", ".join(str(c) if names[c] == str(c) else f"{c} {names[c]}" for c in classes)


def _masked_table(s: dict[str, Any]) -> Table:
    names = s["class_names"]
    if s["labels_per_class"] is not None:
        amount = f"{s['labels_per_class']} per labelled class"
    elif s.get("label_source") == "as-given":
        amount = "every label in the file"
    elif s["label_fraction"] is not None:
        amount = f"{s['label_fraction']:g} of each labelled class (round(p * n_c))"
    else:
        amount = "no labels"
    per_class = "  ".join(f"{c}:{s['labelled_counts'][c]}" for c in s["labelled_classes"])
    rows = [
        ("file", s["path"]),
        ("kind", f"{s['kind']} (format {s['format_version']}, susl {s['susl_version']})"),
        ("dataset", s["dataset"]),
        ("regime", AS_GIVEN_NOTE if s.get("label_source") == "as-given"
         else REGIME_NAMES.get(s["regime"], s["regime"])),
        ("inputs", f"{s['input_kind']}, shape {tuple(s['input_shape'])}, "
                   f"{len(names)} classes"),
        ("labelled classes", _classes_text(s["labelled_classes"], names)),
        ("hidden classes", _classes_text(s["hidden_classes"], names)),
        ("label amount", amount),
        ("input features", s.get("input_features") or "raw (training may choose)"),
        ("train", str(s["n_train"])),
        ("labelled", str(s["n_labelled"])),
        ("unlabelled", str(s["n_unlabelled"])),
        ("test", "none" if s["n_test"] is None else str(s["n_test"])
         + (f" (split off: --test-fraction {s['test_fraction']:g})"
            if s.get("test_fraction") else "")),
        ("labels per class", per_class or "none"),
        ("seed", str(s["seed"])),
        ("created (UTC)", s["created_utc"]),
        ("source sha256", s["source_checksum"][:16] + "..."),
        ("file sha256", s["sha256"][:16] + "..."),
    ]
    table = Table(title="masked dataset", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field, value in rows:
        table.add_row(field, value)
    return table


INFO_HANDLERS[KIND_MASKED_DATASET] = (describe_masked_dataset, _masked_table)


@contextlib.contextmanager
def _download_progress(enabled: bool) -> Iterator[ProgressCallback | None]:
    """A rich download bar on stderr (only on a terminal, so logs and JSON stay clean)."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    with Progress(*columns, console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def update(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"downloading {name}", total=total)
            bar.update(tasks[name], completed=done, total=total)

        yield update
