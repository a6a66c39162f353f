"""Terminal rendering: metric tables, confusion matrices, run summaries and progress bars.

CLI layer: only this module and susl_cli/cli/ import rich. The functions build rich objects
and print nothing themselves; the command decides which console (stdout or stderr) gets them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from susl_cli.metrics import COUNT_FIELDS, SUMMARY_FIELDS, Metrics

T = TypeVar("T")

NOT_AVAILABLE = "n/a"  # shown for NaN: the subset a metric scores is empty

# Metrics that are fractions and read best in percent; others are printed as they are.
_FRACTION_METRICS = frozenset(SUMMARY_FIELDS) - COUNT_FIELDS

# Each metric named by the protocol that produced it, so no number is read under the wrong one.
METRIC_LABELS: dict[str, str] = {
    "cluster_acc_majority": "cluster accuracy (majority mapping)",
    "cluster_acc_hungarian": "Hungarian accuracy (one-to-one)",
    "known_acc_classifier": "known-class accuracy (classifier labels, no relabelling)",
    "known_acc_majority": "known-class accuracy (majority mapping)",
    "novel_acc_majority": "novel-class accuracy (majority mapping)",
    "nmi": "NMI (components vs classes)",
    "ari": "ARI (components vs classes)",
    "n_components_used": "components used",
    "discovered_acc_all": "discovered classes: Hungarian accuracy, all",
    "discovered_acc_old": "discovered classes: Hungarian accuracy, labelled classes",
    "discovered_acc_new": "discovered classes: Hungarian accuracy, hidden classes",
    "n_new_found": "new classes found (k-hat, no labels used)",
    "n_new_true": "hidden classes in the scored points",
    "novelty_auroc": "novelty score AUROC (hidden vs labelled classes, %)",
    "entropy_auroc": "entropy of q(y|x) AUROC (same task, %)",
}
DISCOVERY_FIELDS = ("discovered_acc_all", "discovered_acc_old", "discovered_acc_new",
                    "n_new_found", "n_new_true", "novelty_auroc", "entropy_auroc")


def _is_nan(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _percent(value: float | None) -> str:
    return NOT_AVAILABLE if _is_nan(value) else f"{100.0 * value:.1f}%"


def _plain(value: float | None) -> str:
    return NOT_AVAILABLE if _is_nan(value) else f"{value:.3f}"


def metrics_table(metrics: Metrics, title: str) -> Table:
    """One row per metric, each named by its protocol and where its mapping was fitted."""
    fitted = f"fitted on {metrics.mapping_fit}"
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row(
        f"cluster accuracy (majority mapping, {fitted})", _percent(metrics.cluster_acc_majority)
    )
    table.add_row(
        f"Hungarian accuracy (one-to-one, {fitted})", _percent(metrics.cluster_acc_hungarian)
    )
    table.add_row(METRIC_LABELS["known_acc_classifier"], _percent(metrics.known_acc_classifier))
    table.add_row(
        f"known-class accuracy (majority mapping, {fitted})", _percent(metrics.known_acc_majority)
    )
    table.add_row(
        f"novel-class accuracy (majority mapping, {fitted})", _percent(metrics.novel_acc_majority)
    )
    table.add_row(METRIC_LABELS["nmi"], _plain(metrics.nmi))
    table.add_row(METRIC_LABELS["ari"], _plain(metrics.ari))
    table.add_row("components used k/K", f"{metrics.n_components_used}/{metrics.n_components}")
    for name in DISCOVERY_FIELDS:
        value = getattr(metrics, name)
        shown = (NOT_AVAILABLE if _is_nan(value) else f"{value:.0f}") \
            if name in COUNT_FIELDS else _percent(value)
        table.add_row(METRIC_LABELS[name], shown)
    table.add_row("points scored", str(metrics.n_points))
    return table


def _cell_style(count: float, share: float, highlighted: bool) -> str:
    """Style of one confusion cell from its row share: the eye goes to mass off the diagonal."""
    if count == 0:
        return "dim"
    if highlighted:
        return "bold green"
    if share >= 0.2:
        return "bold red"
    if share >= 0.05:
        return "yellow"
    return ""


def confusion_table(
    matrix: Any,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    *,
    diagonal: bool = True,
) -> Table:
    """Counts with each cell styled by its share of the row.

    diagonal=True (true class x mapped class) highlights the diagonal in green and large
    off-diagonal shares in red/yellow; diagonal=False (class x component, where the diagonal
    means nothing) highlights each row's largest cell instead. Zeros are dimmed.
    """
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"matrix of shape {counts.shape} does not match "
            f"{len(row_labels)} row and {len(col_labels)} column labels"
        )
    row_sums = counts.sum(axis=1)
    table = Table(title=title, title_justify="left")
    table.add_column("true \\ predicted")
    for label in col_labels:
        table.add_column(str(label), justify="right")
    for i, label in enumerate(row_labels):
        best = int(np.argmax(counts[i])) if counts.shape[1] else -1
        cells = []
        for j, count in enumerate(counts[i]):
            share = float(count) / row_sums[i] if row_sums[i] else 0.0
            highlighted = (i == j) if diagonal else (j == best)
            cells.append(Text(f"{count:g}", style=_cell_style(float(count), share, highlighted)))
        table.add_row(str(label), *cells)
    return table


def _mean_sd(name: str, mean: float, sd: float) -> str:
    """'97.6 ± 0.1' in percent for fractions, plain for counts; no ± part for one run."""
    factor = 100.0 if name in _FRACTION_METRICS else 1.0
    if _is_nan(mean):
        return NOT_AVAILABLE
    text = f"{factor * mean:.1f}"
    return text if _is_nan(sd) else f"{text} ± {factor * sd:.1f}"


def _paper_cell(reference: Any) -> str:
    """A paper value as printed: a string, a percent number, or a (mean, sd) pair in percent."""
    if reference is None:
        return ""
    if isinstance(reference, str):
        return reference
    if isinstance(reference, tuple | list):
        mean, sd = reference
        return f"{float(mean):.1f} ± {float(sd):.1f}"
    return f"{float(reference):.1f}"


def runs_summary_table(
    summary: Mapping[str, tuple[float, float]],
    n_runs: int,
    paper_reference: Mapping[str, Any] | None = None,
) -> Table:
    """Table-2-style mean ± sample sd over runs (accuracies, NMI and ARI in %).

    `paper_reference` maps metric names to the paper's value in percent (a number, a
    (mean, sd) pair or a string as printed); it adds a "paper" column when given.
    """
    runs = f"{n_runs} run{'s' if n_runs != 1 else ''}"
    table = Table(title=f"mean ± sd over {runs} (accuracies, NMI, ARI in %)", title_justify="left")
    table.add_column("metric")
    table.add_column("mean ± sd", justify="right")
    if paper_reference is not None:
        table.add_column("paper", justify="right")
    for name, (mean, sd) in summary.items():
        row = [METRIC_LABELS.get(name, name), _mean_sd(name, mean, sd)]
        if paper_reference is not None:
            row.append(_paper_cell(paper_reference.get(name)))
        table.add_row(*row)
    return table


class _InfoColumn(ProgressColumn):
    """Free text per task (loss terms, samples per second), empty until the caller sets it.

    A plain TextColumn("{task.fields[info]}") would raise for a task added without `info`.
    """

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get("info", "")))


class SilentProgress:
    """Stands in for rich's Progress under --quiet: same methods, prints nothing."""

    def __init__(self) -> None:
        self._next_id = 0

    def __enter__(self) -> SilentProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        """Return a fresh task id, as Progress does, so callers can keep ids around."""
        task_id = TaskID(self._next_id)
        self._next_id += 1
        return task_id

    def update(self, task_id: TaskID, *args: Any, **kwargs: Any) -> None:
        """Ignore the update."""

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        """Ignore the step."""

    def remove_task(self, task_id: TaskID) -> None:
        """Ignore the removal."""

    def track(self, sequence: Iterable[T], *args: Any, **kwargs: Any) -> Iterator[T]:
        """Yield the items unchanged."""
        yield from sequence


def make_progress(quiet: bool, console: Console | None = None) -> Progress | SilentProgress:
    """A progress display for long loops, or a silent stand-in when `quiet`.

    Columns: description, bar, done/total, elapsed, remaining, then free text set with
    progress.update(task, info="..."). It draws on stderr by default so that --json output on
    stdout stays machine-readable.
    """
    if quiet:
        return SilentProgress()
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        _InfoColumn(),
        console=console if console is not None else Console(stderr=True),
    )


def discovered_classes_text(discovery: dict[str, Any] | None) -> str:
    """'3 found (latent): new-1 1,204 rows, new-2 ...' from a stored discovery."""
    if not discovery:
        return "none stored (run `susl discover RUN`)"
    n_labelled = int(discovery["n_labelled"])
    names, sizes = discovery["class_names"], discovery["sizes"]
    new = [f"{n} ({int(sz):,} training rows)"
           for n, sz in zip(names[n_labelled:], sizes[n_labelled:], strict=True)]
    if not new:
        return "none (no extra components, or all joined labelled classes)"
    return f"{len(new)} found ({discovery['method']}): " + ", ".join(new)
