"""Terminal rendering: tables say the right numbers under the right names; quiet is silent."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from susl_cli.console import (
    SilentProgress,
    confusion_table,
    make_progress,
    metrics_table,
    runs_summary_table,
)
from susl_cli.metrics import evaluate_assignments, summarise_runs


def _render(table: Table) -> str:
    console = Console(record=True, width=120)
    console.print(table)
    return console.export_text()


def _metrics():
    # Same case as test_metrics._sus_case: 6/8 majority, 3/4 known and novel.
    return evaluate_assignments(
        [0, 0, 1, 1, 2, 3, 3, 2],
        [0, 1, 1, 1, 2, 3, 3, 3],
        n_components=5,
        n_classes=4,
        labelled_classes=(0, 1),
    )


def test_metrics_table_names_protocols_and_values() -> None:
    text = _render(metrics_table(_metrics(), "MNIST test set"))
    assert "MNIST test set" in text
    assert "cluster accuracy (majority mapping, fitted on test)" in text
    assert "Hungarian accuracy (one-to-one" in text
    assert "known-class accuracy (classifier labels, no relabelling)" in text
    assert "novel-class accuracy (majority mapping" in text
    assert "75.0%" in text
    assert "4/5" in text  # components used k/K
    assert "NMI" in text and "ARI" in text


def test_metrics_table_shows_nan_as_not_available() -> None:
    m = evaluate_assignments([0, 1], [0, 1], n_components=2, n_classes=2, labelled_classes=())
    text = _render(metrics_table(m, "unsupervised"))
    assert "n/a" in text
    assert "100.0%" in text


def test_confusion_table_counts_and_styles() -> None:
    matrix = [[5, 1, 0], [0, 3, 2]]
    table = confusion_table(matrix, ["cat", "dog"], ["cat", "dog", "unmapped"], "confusion")
    text = _render(table)
    for label in ("cat", "dog", "unmapped", "confusion"):
        assert label in text
    # Styles: diagonal green, zeros dim, a 40% off-diagonal share red.
    cells = [list(column.cells) for column in table.columns]
    assert cells[1][0].style == "bold green"  # row cat, column cat
    assert cells[3][0].style == "dim"  # row cat, column unmapped (0)
    assert cells[3][1].style == "bold red"  # row dog, unmapped: 2/5


def test_confusion_table_without_diagonal_highlights_row_maximum() -> None:
    table = confusion_table([[1, 4]], ["cat"], ["k0", "k1"], "raw", diagonal=False)
    cells = [list(column.cells) for column in table.columns]
    assert cells[2][0].style == "bold green"


def test_runs_summary_table_in_percent_with_paper_column() -> None:
    runs = [_metrics(), _metrics()]
    summary = summarise_runs(runs)
    summary["cluster_acc_majority"] = (0.925, 0.003)
    table = runs_summary_table(
        summary, n_runs=2, paper_reference={"cluster_acc_majority": (92.5, 0.3)}
    )
    text = _render(table)
    assert "mean ± sd over 2 runs" in text
    assert text.count("92.5 ± 0.3") == 2  # ours and the paper's
    assert "components used" in text and "4.0 ± 0.0" in text  # a count, not a percent


def test_runs_summary_table_single_run_has_no_sd() -> None:
    text = _render(runs_summary_table({"nmi": (0.5, float("nan"))}, n_runs=1))
    (row,) = [line for line in text.splitlines() if "NMI (" in line]
    assert "50.0" in row and "±" not in row


def test_silent_progress_prints_nothing(capsys) -> None:
    progress = make_progress(quiet=True)
    assert isinstance(progress, SilentProgress)
    with progress:
        task = progress.add_task("training", total=3)
        for _ in progress.track(range(3)):
            progress.advance(task)
        progress.update(task, info="loss 1.0")
    progress.start()
    progress.stop()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_shows_description_counts_and_info() -> None:
    console = Console(record=True, width=120, force_terminal=False)
    progress = make_progress(quiet=False, console=console)
    assert isinstance(progress, Progress)
    with progress:
        task = progress.add_task("epoch 1", total=4)
        other = progress.add_task("no info field", total=1)  # must render without `info`
        progress.advance(task, 4)
        progress.advance(other)
        progress.update(task, info="elbo -98.7")
    text = console.export_text()
    assert "epoch 1" in text and "4/4" in text and "elbo -98.7" in text


@pytest.mark.parametrize("width", [60, 80, 120])
def test_training_bar_takes_one_line_at_60_to_120_columns(width: int) -> None:
    """It wrapped to 2 lines at 120 columns and 5 at 60: the loss text now ends in an ellipsis."""
    from susl_cli.cli.train_command import ProgressObserver

    console = Console(record=True, width=width, force_terminal=False)
    observer = ProgressObserver(quiet=False)
    observer.progress = make_progress(quiet=False, console=console)
    observer.epoch_started(3, 25, 90)
    observer.steps_done(10)
    observer.running_loss(428.91)  # the loss shows within the first epoch
    observer.epoch_finished({"loss": 428.91, "train_labelled_acc": 0.619,
                             "components_used": 4.0, "samples_per_s": 1233.0})
    observer.close()
    lines = [line for line in console.export_text().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "epoch 3/25" in lines[0] and "loss 428" in lines[0]


def test_wide_raw_matrix_is_split_into_blocks_that_keep_every_count() -> None:
    from susl_cli.console import confusion_tables

    counts = np.arange(6 * 45).reshape(6, 45) * 37
    names = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]
    tables = confusion_tables(counts, names, [str(j) for j in range(45)], "raw", 100,
                              diagonal=False)
    assert len(tables) > 1
    seen = []
    for table in tables:
        console = Console(record=True, width=100)
        console.print(table)
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= 100
        assert "WALKING_DOWNSTAIRS" in text and "…" not in text
        seen += [int(cell) for cell in text.split() if cell.isdigit()]
    assert set(counts.ravel().tolist()) <= set(seen)


def test_redirected_results_are_not_cut_at_80_columns() -> None:
    from susl_cli.console import WIDTH_WHEN_REDIRECTED, stdout_console

    console = stdout_console()  # pytest captures stdout: not a terminal
    assert not console.is_terminal and console.width == WIDTH_WHEN_REDIRECTED
