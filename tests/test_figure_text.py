"""Figure text a person can read, checked on matplotlib's own artists (not on pixels)."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from susl_cli import plots
from susl_cli.cli import app

HAR = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plotting functions save, kept open for inspection."""
    figures = []
    monkeypatch.setattr(plots, "_save_figure", lambda fig, path, **kw: figures.append(fig))
    yield figures
    for fig in figures:
        plots.plt.close(fig)


def _overlapping(labels) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent()) for t in labels if t.get_text()]
    return [(a, b) for (a, box_a), (b, box_b) in combinations(boxes, 2) if box_a.overlaps(box_b)]


@pytest.mark.parametrize("names", [HAR, FASHION, [str(d) for d in range(10)]])
def test_confusion_class_names_do_not_overlap(drawn, names, tmp_path: Path):
    counts = np.arange(len(names) * (len(names) + 1)).reshape(len(names), -1)
    plots.plot_confusion(counts, names, [*names, "unmapped"], tmp_path / "c.png", "t")
    (fig,) = drawn
    fig.canvas.draw()
    ax = fig.axes[0]
    assert _overlapping(ax.get_xticklabels()) == []
    assert _overlapping(ax.get_yticklabels()) == []


def test_confusion_png_title_names_the_run_and_dataset(drawn, runner, tiny_image_run, tmp_path):
    result = runner.invoke(app, ["evaluate", str(tiny_image_run[1]), "--plot",
                                 str(tmp_path / "c.png"), "--quiet"])
    assert result.exit_code == 0, result.output
    title = " ".join(drawn[0].axes[0].get_title().split())
    assert tiny_image_run[1].name in title and "tiny.npz" in title and "gmdgm" in title
    assert "GM-DGM" in title  # the registered title beside the id


def test_sample_grid_column_titles_say_what_each_number_is(runner, tiny_image_run, tmp_path):
    import json

    result = runner.invoke(app, ["sample", str(tiny_image_run[1]), "--out",
                                 str(tmp_path / "s.png"), "--json"])
    summary = json.loads(result.stdout)
    first = summary["components"][0]
    assert "comp = component" in summary["caption"]
    from susl_cli.sample import SampleGrid

    titles = SampleGrid(np.empty(0), np.array([first, 33]), np.array([0, 2]),
                        ["0", "1", "new-1"], "means", 0, "", True, "run.h5").column_titles
    assert titles == [f"comp {first}\nclass 0", "comp 33\nclass new-1"]


def test_predicting_from_a_wide_csv_prints_no_pandas_warning(runner, tiny_image_run, tmp_path):
    """Adding the missing label column to a 784-column frame made pandas warn on stderr."""
    import warnings

    import pandas as pd

    from susl_cli.data.user_files import read_user_inputs

    path = tmp_path / "wide.csv"
    pd.DataFrame(np.zeros((3, 784)), columns=[f"p{i}" for i in range(784)]).to_csv(path,
                                                                                  index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_user_inputs(path, "label")


def test_no_source_cites_a_file_the_project_does_not_have():
    root = Path(__file__).resolve().parent.parent
    texts = [p.read_text() for p in [*root.glob("susl_cli/**/*.py"), *root.glob("docs/*.md"),
                                      root / "README.md"]]
    assert not any("docs/spec.md" in t or "spec section" in t for t in texts)
