"""The paper's numbers, and the experiment's reports: one CSV row per run, a Markdown table.

The Markdown is what docs/results.md includes, so it describes itself: the exact command,
epochs (and whether that is less than the paper's), seeds, metric and mapping protocol,
hardware, time and date. Library layer: no CLI imports, prints nothing.
"""

from __future__ import annotations

import csv
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from susl_cli import __version__
from susl_cli.metrics import summarise_runs
from susl_cli.models import model_title
from susl_cli.placement import describe_placement
from susl_cli.storage.atomic import write_text_atomic

if TYPE_CHECKING:
    from susl_cli.experiment import ExperimentConfig, ExperimentResult

PAPER_SOURCE = ("Willetts, Roberts & Holmes, semi-unsupervised learning with deep generative "
                "models: clustering and classifying using ultra-sparse labels (2019), Tables 1 "
                "and 2 as transcribed in susl_cli/experiment_report.py")
PAPER_EPOCHS = 400  # "up to 400 epochs" (paper appendix A)

# Paper Table 2: test accuracy / cluster purity (%, majority mapping), mean ± sd over 4 runs,
# 20% labels on the first half of the classes, n_aug = 40 extra components.
PAPER_TABLE2: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "mnist": {"m2": {"us": (26.1, 2.8), "ss": (97.6, 0.1), "sus": (54.3, 0.9)},
              "gmdgm": {"us": (90.0, 1.5), "ss": (97.7, 0.1), "sus": (92.5, 0.3)}},
    "fashion-mnist": {"m2": {"us": (18.2, 0.4), "ss": (86.8, 0.2), "sus": (38.7, 1.7)},
                      "gmdgm": {"us": (75.8, 0.3), "ss": (86.9, 0.1), "sus": (78.22, 1.1)}},
    "har": {"m2": {"us": (29.0, 1.1), "ss": (97.7, 0.1), "sus": (49.7, 7.5)},
            "gmdgm": {"us": (81.7, 1.8), "ss": (96.6, 0.3), "sus": (87.1, 2.3)}},
}
# Paper Table 1: SSVAE (M2) test accuracy (%) on classes 0-4, 4 runs, 20% labels.
PAPER_TABLE1: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "mnist": {"m2": {"ss_known": (97.0, 0.4), "acc_sus": (97.4, 0.3)}},
    "fashion-mnist": {"m2": {"ss_known": (90.1, 0.3), "acc_sus": (89.8, 0.2)}},
}
PAPER_TABLES = {"table1": PAPER_TABLE1, "table2": PAPER_TABLE2}
PAPER_ROW = {"har-features": "har"}  # which of the paper's datasets a dataset is compared with
PAPER_DATA_NOTES = {
    "har": "the paper's HAR data (Stisen et al. 2015) are not available: ours are UCI HAR raw "
           "inertial windows, so the paper's HAR numbers are a reference, not a like-for-like "
           "comparison",
    "har-features": "the paper's HAR data (Stisen et al. 2015) are not available: ours are the "
                    "561 UCI HAR features, so the paper's HAR numbers are only a reference",
}

# The number each table is about, and how the Markdown names it.
HEADLINE = {"table2": "cluster_acc_majority", "table1": "known_acc_classifier"}
HEADLINE_TEXT = {
    "table2": "test cluster accuracy with the majority mapping (each component takes the most "
              "common true class of its test points; paper eq 13, the paper's protocol)",
    "table1": "test accuracy of the classifier q(y|x) (component j = labelled class j, no "
              "relabelling) on the test points of the labelled classes only",
}
TABLE1_DESIGN = ("- Design: the SS arm trains and tests on the labelled classes only; the "
                 "accidental SUS arm trains on the full SUS mask with no extra components "
                 "(K = number of labelled classes); both label the same training points and "
                 "are scored on the test points of the labelled classes.")
REGIME_TITLES = {"us": "US", "ss": "SS", "sus": "SUS",
                 "ss_known": "SS (labelled classes only)", "acc_sus": "accidental SUS"}
_DETAIL_COLUMNS = (("cluster_acc_majority", "majority"), ("cluster_acc_hungarian", "Hungarian"),
                   ("known_acc_classifier", "known (classifier)"),
                   ("known_acc_majority", "known (majority)"),
                   ("novel_acc_majority", "novel (majority)"), ("nmi", "NMI"), ("ari", "ARI"),
                   ("n_components_used", "components used"))


def paper_number(table: str, dataset: str, model: str, regime: str) -> tuple[float, float] | None:
    """The paper's (mean, sd) in % for one cell, or None where the paper has none."""
    rows = PAPER_TABLES[table].get(PAPER_ROW.get(dataset, dataset), {})
    return rows.get(model, {}).get(regime)


@dataclass(frozen=True)
class Cell:
    """One (model, regime) cell: mean and sample sd over its runs, and the paper's number."""

    model: str
    regime: str
    n_runs: int
    stats: dict[str, tuple[float, float]]   # metrics.SUMMARY_FIELDS -> (mean, sd), fractions
    paper: tuple[float, float] | None       # percent


def summarise_cells(rows: Sequence[dict[str, Any]], table: str, dataset: str) -> list[Cell]:
    """Group the runs by (model, regime), in the order they first appear, and summarise."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["regime"]), []).append(row)
    return [Cell(model, regime, len(runs), summarise_runs(runs),
                 paper_number(table, dataset, model, regime))
            for (model, regime), runs in groups.items()]


def format_mean_sd(mean: float, sd: float, percent: bool = True) -> str:
    """'97.6 ± 0.1' (fractions shown in %); no ± part for one run; 'n/a' for NaN."""
    if math.isnan(mean):
        return "n/a"
    factor = 100.0 if percent else 1.0
    text = f"{factor * mean:.1f}"
    return text if math.isnan(sd) else f"{text} ± {factor * sd:.1f}"


def format_paper(value: tuple[float, float] | None) -> str:
    return "—" if value is None else f"{value[0]:g} ± {value[1]:g}"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{int(minutes)} min {int(seconds % 60):02d} s"
    return f"{int(minutes // 60)} h {int(minutes % 60):02d} min"


def describe_hardware(slots: Sequence[str]) -> str:
    """CPU model and cores, where the worker slots ran (e.g. '2 x NVIDIA H200, 4 jobs (2 per
    GPU)'), and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return "; ".join([f"CPU {cpu} ({os.cpu_count()} logical cores)", describe_placement(slots),
                      f"torch {torch.__version__}, Python {platform.python_version()}, "
                      f"susl {__version__}"])


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """One line per run, columns in the rows' order; NaN written as an empty cell."""
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v
                         for k, v in row.items()})
    return buffer.getvalue()


def _classes_text(classes: Sequence[int]) -> str:
    classes = list(classes)
    if classes and classes == list(range(classes[0], classes[-1] + 1)) and len(classes) > 2:
        return f"{classes[0]}-{classes[-1]}"
    return ", ".join(map(str, classes))


def _epochs_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    epochs = sorted({int(r["epochs"]) for r in rows})
    text = (f"{epochs[0]} epoch{'s' if epochs[0] != 1 else ''}" if len(epochs) == 1
            else f"{epochs[0]}-{epochs[-1]} epochs (runs differ: see the CSV)")
    if epochs[0] < PAPER_EPOCHS:
        lines = [f"- **Reduced run: {text}, not the paper's {PAPER_EPOCHS}.**"]
    else:
        lines = [f"- Epochs: {text} (the paper: up to {PAPER_EPOCHS})."]
    restarted = sum(not r["lr_schedule_as_planned"] for r in rows)
    if restarted:
        lines.append(f"- {restarted} run(s) continued a run of another length, so their cosine "
                     "learning-rate schedule restarted (`lr_schedule_as_planned` in the CSV).")
    return lines


def _main_table(config: ExperimentConfig, cells: Sequence[Cell]) -> list[str]:
    by_key = {(c.model, c.regime): c for c in cells}
    metric = HEADLINE[config.table]
    regimes = config.regime_names
    lines = ["| model | | " + " | ".join(REGIME_TITLES[r] for r in regimes) + " |",
             "|---|---|" + "---:|" * len(regimes)]
    for model in config.model_names:
        title = model_title(model)
        measured = [format_mean_sd(*by_key[(model, r)].stats[metric]) if (model, r) in by_key
                    else "—" for r in regimes]
        paper = [format_paper(paper_number(config.table, config.dataset_key, model, r))
                 for r in regimes]
        lines.append(f"| {title} | measured | " + " | ".join(measured) + " |")
        lines.append(f"| {title} | paper | " + " | ".join(paper) + " |")
    return lines


def _detail_table(cells: Sequence[Cell]) -> list[str]:
    lines = ["| model | regime | runs | " + " | ".join(t for _, t in _DETAIL_COLUMNS) + " |",
             "|---|---|---:|" + "---:|" * len(_DETAIL_COLUMNS)]
    for c in cells:
        values = [format_mean_sd(*c.stats[name], percent=name != "n_components_used")
                  for name, _ in _DETAIL_COLUMNS]
        lines.append(f"| {model_title(c.model)} | {REGIME_TITLES[c.regime]} | "
                     f"{c.n_runs} | " + " | ".join(values) + " |")
    return lines


def markdown_text(result: ExperimentResult, cells: Sequence[Cell], command: str,
                  generated: datetime | None = None) -> str:
    """The self-describing Markdown report of one finished grid."""
    plan, rows = result.plan, result.rows
    config = plan.config
    generated = generated or datetime.now(UTC)
    seeds = sorted({int(r["seed"]) for r in rows})
    train_s = sum(float(r["train_seconds"]) for r in rows)
    title = "Table 1 (accidental SUS)" if config.table == "table1" else "Table 2"
    note = PAPER_DATA_NOTES.get(config.dataset_key)
    settings = ", ".join(f"{k}={v}" for k, v in config.settings) or "none"
    with_settings = f" with {settings}" if config.settings else ""  # not the paper's setting
    lines = [
        f"### {title} on {config.dataset_key}{with_settings}: measured by `susl experiment`",
        "",
        "<!-- generated by susl experiment: do not edit by hand, rerun the command -->",
        "",
        *_main_table(config, cells),
        "",
        f"Metric: {HEADLINE_TEXT[config.table]}; mean ± sample sd over {len(seeds)} seed(s) "
        f"({_classes_text(seeds)}), in %.",
        "",
        *_epochs_lines(rows),
        f"- Command: `{command}`",
        f"- Data: {config.dataset_key}; labelled classes {_classes_text(plan.labelled_classes)}"
        f" of {plan.n_classes}, {config.label_fraction:g} of each labelled (SS: all classes, "
        "US: none); mask seed = training seed; the test set is never masked.",
        *([TABLE1_DESIGN] if config.table == "table1" else []),
        f"- Training options: preset {config.preset_name or 'none'}; --set {settings}.",
        f"- Paper: {PAPER_SOURCE}." + (f" Note: {note}." if note else ""),
        f"- Hardware: {describe_hardware(result.slots or config.slots())}; device "
        f"{config.device}.",
        f"- Time: {format_duration(train_s)} of training summed over {len(rows)} runs (from "
        "the checkpoints); wall time of the last invocation "
        f"{format_duration(result.wall_seconds)}.",
        f"- Generated: {generated:%Y-%m-%d %H:%M} UTC.",
        "",
        "All metrics (mean ± sd over seeds; accuracies, NMI and ARI in %; mappings fitted on "
        "the scored test points):",
        "",
        *_detail_table(cells),
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Report:
    cells: list[Cell]
    csv_path: Path
    markdown_path: Path
    markdown: str


def write_reports(result: ExperimentResult, command: str) -> Report:
    """Write OUT/<table>_<dataset>.csv and .md (regenerated from the runs on every call)."""
    config = result.plan.config
    cells = summarise_cells(result.rows, config.table, config.dataset_key)
    out = Path(config.out_dir)
    csv_path, md_path = out / f"{config.name}.csv", out / f"{config.name}.md"
    # regenerated on every run of the grid: no --overwrite
    write_text_atomic(csv_path, csv_text(result.rows), overwrite=True)
    text = markdown_text(result, cells, command)
    write_text_atomic(md_path, text, overwrite=True)
    return Report(cells, csv_path, md_path, text)


__all__ = ["Cell", "PAPER_TABLE1", "PAPER_TABLE2", "Report", "format_mean_sd", "paper_number",
           "summarise_cells", "write_reports"]
