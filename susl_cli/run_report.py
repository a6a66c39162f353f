"""One page a person can open about one run: `susl report RUN --out report.html` (or .md).

The page holds the run's settings, its metric table (each metric named by its protocol), the
true class x mapped class confusion matrix (as a table and a figure), the sample grid (image
data), the entropy plot (paper Fig 2) and the training curves. Figures are PNGs embedded as
data URIs, so the one file is the whole report. Library layer: no typer, no rich.
"""

from __future__ import annotations

import base64
import html
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from susl_cli import __version__
from susl_cli.errors import UsageError
from susl_cli.evaluate import Evaluation, evaluate_checkpoint
from susl_cli.metrics import entropy
from susl_cli.models import model_label
from susl_cli.storage.atomic import write_text_atomic
from susl_cli.storage.files import check_output_path
from susl_cli.training_log import history_columns

FORMATS = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown"}
CURVES = ("loss", "lr", "train_labelled_acc", "components_used", "labelled_share_ratio")
# (metric field, label naming its protocol, percent?) in the order `susl evaluate` prints them
METRIC_ROWS = (
    ("cluster_acc_majority", "cluster accuracy (majority mapping, fitted on {fit})", True),
    ("cluster_acc_hungarian", "Hungarian accuracy (one-to-one, fitted on {fit})", True),
    ("known_acc_classifier", "known-class accuracy (classifier labels, no relabelling)", True),
    ("known_acc_majority", "known-class accuracy (majority mapping, fitted on {fit})", True),
    ("novel_acc_majority", "novel-class accuracy (majority mapping, fitted on {fit})", True),
    ("nmi", "NMI (components vs classes)", False),
    ("ari", "ARI (components vs classes)", False),
)


@dataclass
class Section:
    """A heading with tables (header row + rows), figures (title, PNG bytes) and notes."""

    title: str
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def write_run_report(checkpoint: Path, out: Path, *, data: Path | None = None,
                     device: str = "auto", seed: int = 0, overwrite: bool = False
                     ) -> dict[str, Any]:
    """Evaluate `checkpoint`, draw its figures and write them with its tables into `out`."""
    checkpoint, out = Path(checkpoint), Path(out)
    kind = FORMATS.get(out.suffix.lower())
    if kind is None:
        raise UsageError(f"--out {str(out)!r}: give a .html or .md file name")
    check_output_path(out, overwrite, inputs=(checkpoint, data))
    e = evaluate_checkpoint(checkpoint, data, "test", device)
    sections = [_settings(e), _metrics(e), _confusion(e), *_figures(e, checkpoint, data,
                                                                   device, seed)]
    title = f"susl report: {checkpoint.name} on {Path(e.data_file).name}"
    text = _html(title, sections) if kind == "html" else _markdown(title, sections)
    write_text_atomic(out, text, overwrite=overwrite, inputs=(checkpoint, data))
    return {"out": str(out), "format": kind, "checkpoint": str(checkpoint),
            "sections": [s.title for s in sections],
            "figures": [t for s in sections for t, _ in s.figures]}


# --- content ---------------------------------------------------------------------------------

def _settings(e: Evaluation) -> Section:
    meta, mc, tc = e.run.meta, e.run.model_config, e.run.train_config
    rows = [["checkpoint", e.checkpoint], ["scored on", f"{e.data_file} ({len(e.y_true)} test "
                                                        "points)"],
            ["dataset", f"{meta.dataset} ({meta.regime})"],
            ["labelled classes", ", ".join(map(str, meta.labelled_classes)) or "none"],
            ["model", f"{model_label(mc.model)}, K = {mc.n_components} components ({mc.n_labelled} "
                      f"labelled), latent {mc.latent_dim}, hidden {mc.hidden_units}, "
                      f"{mc.likelihood} likelihood, input features "
                      f"{getattr(mc, 'input_features', 'raw')}"],
            ["epochs", f"{e.run.epoch} of {tc.epochs}"],
            ["seed", str(meta.seed)], ["susl", __version__]]
    rows += [[f"train: {k}", f"{v:g}" if isinstance(v, float) else str(v)]
             for k, v in sorted({**vars(e.run.model.objective), **vars(tc)}.items())]
    return Section("Settings", tables=[(["setting", "value"], rows)])


def _metrics(e: Evaluation) -> Section:
    m = e.metrics
    rows = [[label.format(fit=m.mapping_fit), _value(getattr(m, name), percent)]
            for name, label, percent in METRIC_ROWS]
    rows += [["components used k/K", f"{m.n_components_used}/{m.n_components}"],
             ["points scored", str(m.n_points)]]
    return Section("Metrics", tables=[(["metric", "value"], rows)],
                   notes=["The mapping from components to classes is fitted on the "
                          f"{m.mapping_fit} set (the paper's protocol: test)."])


def _confusion(e: Evaluation) -> Section:
    from susl_cli import plots

    names = e.class_names
    columns = [*names, "unmapped"]
    counts = np.asarray(e.metrics.confusion)
    rows = [[names[i], *(f"{c:g}" for c in counts[i])] for i in range(len(names))]
    title = (f"{Path(e.checkpoint).name} ({model_label(e.run.model_config.model)}) "
             f"on {e.run.meta.dataset}: true x mapped class")
    png = _render(lambda p: plots.plot_confusion(counts, names, columns, p, title))
    return Section("Confusion matrix (true class x mapped class, majority mapping)",
                   tables=[(["true \\ predicted", *columns], rows)],
                   figures=[("confusion matrix", png)])


def _figures(e: Evaluation, checkpoint: Path, data: Path | None, device: str, seed: int
             ) -> list[Section]:
    from susl_cli import plots
    from susl_cli.sample import SampleOptions, is_image_run, sample_to_file

    sections = []
    if is_image_run(e.run):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "samples.png"
            summary = sample_to_file(checkpoint, path, SampleOptions(seed=seed, data=data,
                                                                     device=device))
            sections.append(Section("Samples", figures=[("sample grid", path.read_bytes())],
                                    notes=[summary["caption"]]))
    h = entropy(e.probs)
    known = np.isin(e.y_true, e.run.meta.labelled_classes)
    png = _render(lambda p: plots.plot_entropy_kde(h[known], h[~known], p,
                                                  "entropy of q(y|x) on test points"))
    sections.append(Section("Entropy of q(y|x)", figures=[("entropy plot", png)],
                            notes=["Labelled-class vs hidden-class test points (paper Fig 2)."]))
    history = {k: e.run.history[k] for k in history_columns(e.run.history) if k in CURVES}
    if history:
        sections.append(Section("Training curves", figures=[
            ("training curves", _render(lambda p: _plot_curves(history, p)))],
            notes=["Per epoch; the same values are in the run's .history.csv."]))
    return sections


def _plot_curves(history: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from susl_cli import plots

    fig, axes = plt.subplots(1, len(history), figsize=(3.2 * len(history), 2.8), squeeze=False)
    for ax, (name, values) in zip(axes[0], history.items(), strict=True):
        ax.plot(np.arange(1, len(values) + 1), values, marker="." if len(values) < 30 else "")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    plots._save_figure(fig, path, dpi=plots.DPI)


def _value(value: float, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"


def _render(draw: Any) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "figure.png"
        draw(path)
        return path.read_bytes()


# --- formats ---------------------------------------------------------------------------------

def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _html(title: str, sections: list[Section]) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
             "text-align:right}td:first-child{text-align:left}img{max-width:100%}</style>",
             "</head><body>", f"<h1>{esc(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{esc(s.title)}</h2>")
        for header, rows in s.tables:
            parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header)
                         + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                      for row in rows]
            parts.append("</tbody></table>")
        parts += [f"<figure><img alt=\"{esc(t)}\" src=\"{_data_uri(png)}\">"
                  f"<figcaption>{esc(t)}</figcaption></figure>" for t, png in s.figures]
        parts += [f"<p>{esc(note)}</p>" for note in s.notes]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _markdown(title: str, sections: list[Section]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    parts = [f"# {title}", ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        for header, rows in s.tables:
            parts.append("| " + " | ".join(cell(h) for h in header) + " |")
            parts.append("|" + "|".join(["---"] * len(header)) + "|")
            parts += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
            parts.append("")
        parts += [f"![{t}]({_data_uri(png)})\n" for t, png in s.figures]
        parts += [f"{note}\n" for note in s.notes]
    return "\n".join(parts)
