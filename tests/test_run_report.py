"""`susl report`: one file with a run's settings, tables and figures, checked by parsing it."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

from matplotlib import image as mpimg

from susl_cli.cli import app

FIGURES = ["confusion matrix", "sample grid", "entropy plot", "training curves"]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.cells: list[str] = []
        self.images: list[tuple[str, str]] = []
        self._tag = ""

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        if tag == "img":
            a = dict(attrs)
            self.images.append((a["alt"], a["src"]))

    def handle_data(self, data):
        if self._tag == "h2" and data.strip():
            self.headings.append(data.strip())
        if self._tag == "td":
            self.cells.append(data.strip())


def _png(uri: str):
    assert uri.startswith("data:image/png;base64,")
    return mpimg.imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")


def test_html_report_holds_settings_tables_and_figures(runner, tiny_image_run, tmp_path: Path):
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(tiny_image_run[1]), "--out", str(out),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    page = _Page()
    page.feed(out.read_text())
    assert page.headings[:2] == ["Settings", "Metrics"]
    assert any(h.startswith("Confusion matrix") for h in page.headings)
    assert {"Samples", "Entropy of q(y|x)", "Training curves"} <= set(page.headings)
    assert "gmdgm" in " ".join(page.cells)
    i = page.cells.index("cluster accuracy (majority mapping, fitted on test)")
    assert re.fullmatch(r"\d+\.\d%", page.cells[i + 1])
    assert [alt for alt, _ in page.images] == FIGURES
    for alt, src in page.images:
        image = _png(src)
        assert image.ndim == 3 and min(image.shape[:2]) > 50, alt


def test_markdown_report_and_refusals(runner, tiny_image_run, tmp_path: Path):
    out = tmp_path / "report.md"
    result = runner.invoke(app, ["report", str(tiny_image_run[1]), "--out", str(out),
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 0 and result.stdout == ""
    text = out.read_text()
    assert re.findall(r"^## (.+)$", text, flags=re.M)[:2] == ["Settings", "Metrics"]
    images = re.findall(r"!\[([^\]]+)\]\((data:image/png;base64,[^)]+)\)", text)
    assert [alt for alt, _ in images] == FIGURES
    assert _png(images[0][1]).ndim == 3
    assert "| cluster accuracy (majority mapping, fitted on test) |" in text
    again = runner.invoke(app, ["report", str(tiny_image_run[1]), "--out", str(out)])
    assert again.exit_code != 0 and "--overwrite" in again.stderr
    wrong = runner.invoke(app, ["report", str(tiny_image_run[1]), "--out",
                                str(tmp_path / "r.pdf")])
    assert wrong.exit_code != 0 and ".html or .md" in wrong.stderr
