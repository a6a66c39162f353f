"""Figures: each writes a valid PNG of the expected size, or raises OutputError if it cannot."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from susl_cli import plots
from susl_cli.errors import DataError, OutputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read_png(path: Path) -> np.ndarray:
    """Check the file is a PNG and return its pixels (height, width, channels)."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 10 and pixels.shape[1] > 10
    return pixels


def _no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_plot_confusion(tmp_path: Path) -> None:
    path = tmp_path / "confusion.png"
    matrix = np.array([[5, 1, 0], [0, 3, 2]])
    plots.plot_confusion(matrix, ["a", "b"], ["a", "b", "unmapped"], path, "test confusion")
    _read_png(path)
    assert _no_temporary_files(tmp_path)


def test_plot_confusion_rejects_mismatched_labels(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not match"):
        plots.plot_confusion(np.eye(2), ["a"], ["a", "b"], tmp_path / "c.png", "t")


@pytest.mark.parametrize(
    ("known", "hidden"),
    [
        (np.linspace(0.0, 0.3, 50), np.linspace(0.5, 2.0, 40)),  # ordinary KDEs
        (np.zeros(10), np.full(5, 1.2)),  # constant: singular KDE -> histograms
        (np.array([0.4]), np.array([])),  # one point and an empty group
    ],
)
def test_plot_entropy_kde(tmp_path: Path, known: np.ndarray, hidden: np.ndarray) -> None:
    path = tmp_path / "entropy.png"
    plots.plot_entropy_kde(known, hidden, path, "entropy of q(y|x)")
    _read_png(path)


def test_plot_tsne_subsamples_and_runs_tsne(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    features = np.vstack([rng.normal(0, 1, (20, 5)), rng.normal(5, 1, (20, 5))])
    labels = np.repeat([0, 1], 20)
    path = tmp_path / "tsne.png"
    plots.plot_tsne(features, labels, ["zero", "one"], path, max_points=30, seed=1)
    _read_png(path)


def test_plot_tsne_two_dimensional_features_skip_tsne(tmp_path: Path, monkeypatch) -> None:
    def no_tsne(*args, **kwargs):
        raise AssertionError("t-SNE must not run on 2-D features")

    monkeypatch.setattr(plots, "TSNE", no_tsne)
    path = tmp_path / "tsne2d.png"
    plots.plot_tsne(np.arange(10.0).reshape(5, 2), [0, 1, 2, 0, 1], ["a", "b", "c"], path)
    _read_png(path)


def test_plot_tsne_rejects_labels_outside_class_names(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="class names"):
        plots.plot_tsne(np.zeros((4, 2)), [0, 1, 2, 3], ["a", "b"], tmp_path / "t.png")


def test_image_grid_is_pixel_exact(tmp_path: Path) -> None:
    n_rows, n_cols, height, width, pad, scale = 2, 3, 5, 4, 2, 3
    images = np.random.default_rng(0).uniform(size=(n_rows * n_cols, height, width))
    path = tmp_path / "grid.png"
    plots.plot_image_grid(images, path, n_rows=n_rows, n_cols=n_cols, pad=pad, scale=scale)
    pixels = _read_png(path)
    # Rows: 2 tiles of 5 * 3 px plus 3 pads of 2 px = 36; columns: 3 * 12 + 4 * 2 = 44.
    assert pixels.shape[:2] == (2 * 15 + 3 * 2, 3 * 12 + 4 * 2)
    grey = pixels[..., 0]
    assert grey[0, 0] == pytest.approx(1.0)  # white frame
    # Tile 4 is row 1, column 1: its top-left pixel is at (2 + 15 + 2, 2 + 12 + 2).
    assert grey[19, 16] == pytest.approx(images[4, 0, 0], abs=1 / 255)
    # Pixel repetition: the 3 x 3 block of one source pixel is uniform.
    np.testing.assert_allclose(grey[19:22, 16:19], images[4, 0, 0], atol=1 / 255)


def test_image_grid_with_column_titles(tmp_path: Path) -> None:
    path = tmp_path / "titled.png"
    images = np.random.default_rng(0).uniform(size=(4, 8, 8))
    plots.plot_image_grid(images, path, n_rows=2, n_cols=2, column_titles=["y=0", "y=1"])
    _read_png(path)


def test_image_grid_rejects_wrong_count(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="2 x 3 grid"):
        plots.plot_image_grid(np.zeros((5, 4, 4)), tmp_path / "g.png", n_rows=2, n_cols=3)


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("missing/grid.png", "does not exist"),
        ("a_file.txt/grid.png", "does not exist"),
        ("grid.pdf", "must end in .png"),
        ("folder.png", "is a folder"),
    ],
)
def test_unwritable_paths_raise_output_error(tmp_path: Path, relative: str, message: str) -> None:
    (tmp_path / "a_file.txt").write_text("not a folder")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(OutputError, match=message):
        plots.plot_image_grid(np.zeros((1, 4, 4)), tmp_path / relative, n_rows=1, n_cols=1)
    with pytest.raises(OutputError, match=message):
        plots.plot_confusion(np.eye(2), ["a", "b"], ["a", "b"], tmp_path / relative, "t")


def test_os_error_while_writing_becomes_output_error(tmp_path: Path, monkeypatch) -> None:
    def disk_full(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots.os, "replace", disk_full)
    with pytest.raises(OutputError, match="no space left on the device"):
        plots.plot_entropy_kde([0.1, 0.2], [0.5, 0.9], tmp_path / "e.png", "t")
    assert list(tmp_path.iterdir()) == []  # the temporary file was removed
