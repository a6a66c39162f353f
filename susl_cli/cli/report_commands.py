"""`susl evaluate`: metrics tables, confusion matrices, JSON/CSV, and the paper's figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from susl_cli.cli.common import (
    DEVICE_OPTION,
    JSON_OPTION,
    OVERWRITE_OPTION,
    QUIET_OPTION,
    app,
    handle_errors,
)
from susl_cli.console import (
    confusion_table,
    confusion_tables,
    metrics_table,
    runs_summary_table,
    stdout_console,
)
from susl_cli.errors import UsageError
from susl_cli.evaluate import Evaluation, embed_points, evaluate_checkpoint
from susl_cli.metrics import SUMMARY_FIELDS, entropy, summarise_runs
from susl_cli.models import model_label, model_title
from susl_cli.storage.files import check_output_path
from susl_cli.storage.outputs import write_csv_atomic


@app.command()
@handle_errors
def evaluate(
    runs: list[Path] = typer.Argument(..., help="One or more checkpoints from `susl train`."),
    data: Path = typer.Option(None, "--data", help="Score this mask file's test set instead "
                              "of the one each run was trained on."),
    fit_mapping: str = typer.Option("test", "--fit-mapping", help="Fit the component->class "
                                    "mapping on 'test' (the paper's protocol) or 'train' "
                                    "(true training labels kept for evaluation; the test set "
                                    "is then only scored)."),
    raw: bool = typer.Option(False, "--raw", help="Also show the true class x component "
                             "matrix."),
    plot: Path = typer.Option(None, "--plot", help="Write the confusion matrix as a PNG."),
    entropy_plot: Path = typer.Option(None, "--entropy-plot", help="Write a KDE of the entropy "
                                      "of q(y|x), labelled vs hidden classes (paper Fig 2)."),
    tsne: Path = typer.Option(None, "--tsne", help="Write a t-SNE map of the posterior means "
                              "coloured by true class (paper Fig D.9; 2000 points)."),
    csv: Path = typer.Option(None, "--csv", help="Write one row of metrics per run as CSV."),
    allow_mixed: bool = typer.Option(False, "--allow-mixed", help="Allow runs trained on "
                                     "different mask files in one table."),
    overwrite: bool = OVERWRITE_OPTION,
    device: str = DEVICE_OPTION,
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Score checkpoints on the test set: cluster accuracy, known/novel accuracy, NMI, ARI.

    Example: susl evaluate run.h5 --plot confusion.png;  susl evaluate seed*.h5 --json
    """
    for path in (plot, entropy_plot, tsne, csv):
        if path is not None:
            check_output_path(path, overwrite, inputs=(*runs, data))
    results = [evaluate_checkpoint(r, data, fit_mapping, device) for r in runs]
    masks = {e.run.meta.mask_sha256 for e in results}
    if len(masks) > 1 and not allow_mixed:
        raise UsageError("these runs were trained on different mask files: evaluate them "
                         "separately, or pass --allow-mixed")
    if csv is not None:
        _write_csv(results, csv)
    if plot is not None or entropy_plot is not None or tsne is not None:
        _figures(results[0], plot, entropy_plot, tsne)
    if as_json:
        # One shape for one run or many: {"runs": [...], "summary": {metric: {mean, sd}}}
        # (sd is null for a single run).
        summary = summarise_runs([e.metrics for e in results])
        payload = {"runs": [e.to_dict() for e in results],
                   "summary": {k: {"mean": _finite(m), "sd": _finite(s)}
                               for k, (m, s) in summary.items()}}
        typer.echo(json.dumps(payload, indent=2, allow_nan=False, default=_none_for_nan))
        return
    if not quiet:
        _render(results, raw)


def _none_for_nan(value: object) -> object:
    return None


def _finite(value: float) -> float | None:
    """JSON has no NaN: a metric with nothing to score (or the sd of one run) is null."""
    return None if value != value else value


def _render(results: list[Evaluation], raw: bool) -> None:
    console = stdout_console()
    if len(results) > 1:
        summary = summarise_runs([e.metrics for e in results])
        console.print(runs_summary_table(summary, len(results)))
        return
    e = results[0]
    names = e.class_names
    unscored = f"; {e.n_unscored} without a label, not scored" if e.n_unscored else ""
    console.print(metrics_table(e.metrics, f"{e.checkpoint} on {Path(e.data_file).name} "
                                           f"({len(e.y_true)} test points{unscored})"))
    console.print(confusion_table(e.metrics.confusion, names, [*names, "unmapped"],
                                  "true class x mapped class (majority mapping)"))
    if e.discovery is not None and e.discovery.n_new:
        found = e.discovery.classify(e.probs)
        table = np.zeros((len(names), len(e.discovery.class_names)), dtype=np.int64)
        np.add.at(table, (e.y_true, found), 1)
        console.print(confusion_table(table, names, list(e.discovery.class_names),
                                      "true class x class given (labelled + discovered; no "
                                      f"labels used to name them: {e.discovery_source})",
                                      diagonal=False))
    if raw:  # only the components some test point was assigned to: the rest are all zeros
        k = e.run.model_config.n_components
        contingency = np.asarray(e.metrics.contingency)
        used = np.flatnonzero(contingency.sum(axis=0))
        console.print(f"true class x component: the {len(used)} of {k} components used "
                      "(the others hold no test point)", soft_wrap=True)
        for table in confusion_tables(contingency[:, used], names, [str(j) for j in used],
                                      "true class x component", console.width, diagonal=False):
            console.print(table)


def _write_csv(results: list[Evaluation], path: Path) -> None:
    rows = [{"checkpoint": e.checkpoint, "model": e.run.model_config.model,
             "seed": e.run.meta.seed,
             **{k: getattr(e.metrics, k) for k in SUMMARY_FIELDS}} for e in results]
    write_csv_atomic(path, pd.DataFrame(rows), overwrite=True)  # --overwrite checked first


def _figures(e: Evaluation, plot: Path | None, entropy_plot: Path | None,
             tsne: Path | None) -> None:
    """The first run's figures (several runs share one mask, so one set of figures)."""
    from susl_cli import plots  # matplotlib is slow to import: only when a figure is asked for

    names, model = e.class_names, e.run.model_config.model
    if plot is not None:
        plots.plot_confusion(e.metrics.confusion, names, [*names, "unmapped"], plot,
                             f"{Path(e.checkpoint).name} ({model_label(model)}) on "
                             f"{e.run.meta.dataset}: true x mapped class")
    if entropy_plot is not None:
        h = entropy(e.probs)
        known = np.isin(e.y_true, e.run.meta.labelled_classes)
        plots.plot_entropy_kde(h[known], h[~known], entropy_plot,
                               "entropy of q(y|x) on test points")
    if tsne is not None:
        keep = np.random.default_rng(e.run.meta.seed).permutation(len(e.y_true))[:2000]
        plots.plot_tsne(embed_points(e.run, e.x[keep]), e.y_true[keep], names, tsne,
                        seed=e.run.meta.seed,
                        title=f"{model_title(model)}: t-SNE of posterior means of z")
