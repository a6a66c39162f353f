"""The paper's figures as PNG files: confusion matrices, entropy KDEs, t-SNE maps, image grids.

Library layer: every function takes the data and an output path, writes one PNG and returns
nothing. Paths must end in ".png" and their folder must exist (the caller decides where
outputs go); a figure that cannot be written raises OutputError with one sentence. Writes are
atomic (a temporary file in the same folder, then a rename), so a failed write never leaves a
half-written figure behind.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import matplotlib

# A headless backend, chosen before pyplot is imported, so figures render on servers and in
# tests without a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.stats import gaussian_kde  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from susl_cli.errors import DataError, OutputError  # noqa: E402
from susl_cli.storage.atomic import write_atomic  # noqa: E402

DPI = 100  # figures with titles and axes are sized in inches at this resolution


def _checked_path(path: str | os.PathLike[str]) -> Path:
    """Reject a path that cannot become a PNG before any work is done on the figure."""
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise OutputError(f"figure path {target} must end in .png; figures are written as PNG")
    if not target.parent.is_dir():
        raise OutputError(
            f"cannot write {target}: folder {target.parent} does not exist; create it first"
        )
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a folder; choose a file name")
    return target


def _write_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Call write(binary file) through susl's one atomic writer (temporary file, rename).

    The caller checked `--overwrite` before any work; the writer still refuses a folder, a
    device, a symbolic link or one of the command's inputs, and turns OS errors into OutputError.
    """
    write_atomic(_checked_path(path), write, overwrite=True)


def _save_figure(fig: Figure, path: str | os.PathLike[str], **savefig_kwargs: Any) -> None:
    """Write `fig` as PNG and always close it (pyplot keeps open figures alive otherwise)."""
    try:
        _write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", **savefig_kwargs))
    finally:
        plt.close(fig)


def plot_confusion(
    matrix: Any,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike[str],
    title: str,
) -> None:
    """Annotated heat map of a count matrix, coloured by the row-normalised share of each cell.

    Colouring by row share (not raw count) keeps small classes as readable as large ones.
    Counts are written in the cells unless the matrix is too large for text to fit.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.ndim != 2 or counts.shape != (len(row_labels), len(col_labels)):
        raise DataError(
            f"confusion matrix of shape {counts.shape} does not match "
            f"{len(row_labels)} row and {len(col_labels)} column labels"
        )
    n_rows, n_cols = counts.shape
    row_sums = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)

    fig_width = max(4.0, 0.45 * n_cols + 2.5)
    fig, ax = plt.subplots(figsize=(fig_width, max(3.0, 0.4 * n_rows + 2.0)))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, label="share of row")
    # Names longer than a few characters (or many columns) stand upright, so class names such
    # as WALKING_UPSTAIRS or T-shirt/top never run into each other.
    longest = max((len(str(label)) for label in col_labels), default=0)
    upright = n_cols > 12 or longest > 3
    ax.set_xticks(range(n_cols), labels=list(col_labels), rotation=90 if upright else 0)
    ax.set_yticks(range(n_rows), labels=list(row_labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true class")
    ax.set_title("\n".join(textwrap.wrap(title, width=max(30, int(fig_width * 11)))),
                 fontsize=10)
    if n_rows * n_cols <= 900:
        fontsize = 8 if n_cols <= 15 else 5
        for (i, j), count in np.ndenumerate(counts):
            colour = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, f"{count:.0f}", ha="center", va="center", color=colour, fontsize=fontsize)
    fig.tight_layout()
    _save_figure(fig, path, dpi=DPI)


def _draw_density(ax: Any, values: np.ndarray, grid: np.ndarray, label: str, colour: str) -> None:
    """A KDE curve when one can be fitted, otherwise a density histogram.

    gaussian_kde needs at least two points with non-zero spread (its covariance is singular
    otherwise); a confident classifier can give exactly constant entropies, so fall back.
    """
    if values.size >= 2 and np.ptp(values) > 1e-12:
        try:
            density = gaussian_kde(values)(grid)
        except (np.linalg.LinAlgError, ValueError):
            density = None
        if density is not None and np.all(np.isfinite(density)):
            ax.plot(grid, density, color=colour, label=label)
            ax.fill_between(grid, density, color=colour, alpha=0.2)
            return
    ax.hist(
        values,
        bins=min(20, max(1, values.size)),
        density=True,
        color=colour,
        alpha=0.5,
        label=f"{label}, histogram",
    )


def plot_entropy_kde(
    entropy_known: Any,
    entropy_hidden: Any,
    path: str | os.PathLike[str],
    title: str,
) -> None:
    """Density of the entropy of q(y|x) for labelled-class vs hidden-class points (paper Fig 2).

    An empty group is named in the legend with n=0 rather than failing, so a semi-supervised
    run (no hidden classes) still gets its figure.
    """
    groups = [
        (np.asarray(entropy_known, dtype=np.float64).ravel(), "labelled classes", "tab:blue"),
        (np.asarray(entropy_hidden, dtype=np.float64).ravel(), "hidden classes", "tab:orange"),
    ]
    present = [values for values, _, _ in groups if values.size]
    every = np.concatenate(present) if present else np.zeros(1)
    low, high = min(0.0, float(every.min())), float(every.max())
    margin = 0.1 * (high - low) if high > low else 0.5
    # Entropy is never negative: start the axis at 0 rather than show KDE spill-over below it.
    grid = np.linspace(low if low >= 0 else low - margin, high + margin, 400)

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for values, name, colour in groups:
        label = f"{name} (n={values.size})"
        if values.size:
            _draw_density(ax, values, grid, label, colour)
        else:
            ax.plot([], [], color=colour, label=label)
    ax.set_xlabel("entropy of q(y|x) (nats)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path, dpi=DPI)


def _embed_2d(features: np.ndarray, seed: int) -> np.ndarray:
    """(N, D) -> (N, 2): identity for D = 2, a zero column added for D = 1, t-SNE otherwise."""
    n_points, dim = features.shape
    if dim == 2:
        return features
    if dim == 1:
        return np.hstack([features, np.zeros_like(features)])
    # sklearn requires perplexity < n_points; 30 is its default for large sets.
    perplexity = min(30.0, max(1.0, (n_points - 1) / 3.0))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(features)


def plot_tsne(
    features: Any,
    labels: Any,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    max_points: int = 2000,
    seed: int = 0,
    title: str = "t-SNE of posterior means",
) -> None:
    """Scatter of a 2-D t-SNE embedding of `features` (N, D), coloured by true class (Fig D.9).

    At most `max_points` points, drawn without replacement with `seed` (t-SNE is quadratic in
    N); the same seed seeds t-SNE, so the figure is reproducible. 2-D features are drawn as
    they are. labels[i] indexes class_names.
    """
    points = np.asarray(features, dtype=np.float64)
    classes = np.asarray(labels).astype(np.int64).ravel()
    if points.ndim != 2 or points.shape[0] != classes.size:
        raise DataError(
            f"features of shape {points.shape} need one label each, got {classes.size} labels"
        )
    if points.shape[0] < 3:
        raise DataError(f"a t-SNE map needs at least 3 points, got {points.shape[0]}")
    if classes.min() < 0 or classes.max() >= len(class_names):
        raise DataError(f"labels must index the {len(class_names)} class names")
    rng = np.random.default_rng(seed)
    if points.shape[0] > max_points:
        keep = np.sort(rng.choice(points.shape[0], size=max_points, replace=False))
        points, classes = points[keep], classes[keep]
    embedded = _embed_2d(points, seed)  # (n, 2)

    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for class_id, name in enumerate(class_names):
        chosen = classes == class_id
        if chosen.any():
            ax.scatter(
                *embedded[chosen].T, s=6, color=colours(class_id % colours.N), label=str(name)
            )
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=8, loc="best")
    fig.tight_layout()
    _save_figure(fig, path, dpi=DPI)


def compose_grid(
    images: Any,
    *,
    n_rows: int,
    n_cols: int,
    pad: int = 2,
    scale: int = 2,
    pad_value: float = 1.0,
) -> np.ndarray:
    """Lay (n_rows * n_cols, H, W) images out row-major into one (height, width) array.

    Each image is enlarged `scale` times by pixel repetition; `pad` pixels of `pad_value`
    separate the tiles and frame the grid, so
    height = n_rows * H * scale + (n_rows + 1) * pad and
    width = n_cols * W * scale + (n_cols + 1) * pad.
    Values are clipped to [0, 1] and NaN becomes 0.
    """
    tiles = np.asarray(images, dtype=np.float64)
    if tiles.ndim != 3 or tiles.shape[0] != n_rows * n_cols:
        raise DataError(
            f"images of shape {tiles.shape} do not fill a {n_rows} x {n_cols} grid; "
            "pass (n_rows * n_cols, H, W)"
        )
    if pad < 0 or scale < 1:
        raise DataError(f"pad must be >= 0 and scale >= 1, got pad={pad}, scale={scale}")
    tiles = np.clip(np.nan_to_num(tiles, nan=0.0), 0.0, 1.0)
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)  # (N, H*s, W*s)
    tile_h, tile_w = tiles.shape[1:]
    grid = np.full(
        (n_rows * tile_h + (n_rows + 1) * pad, n_cols * tile_w + (n_cols + 1) * pad), pad_value
    )
    for index, tile in enumerate(tiles):
        row, col = divmod(index, n_cols)
        top, left = pad + row * (tile_h + pad), pad + col * (tile_w + pad)
        grid[top : top + tile_h, left : left + tile_w] = tile
    return grid


def plot_image_grid(
    images: Any,
    path: str | os.PathLike[str],
    *,
    n_rows: int,
    n_cols: int,
    column_titles: Sequence[str] | None = None,
    pad: int = 2,
    scale: int = 2,
    pad_value: float = 1.0,
) -> None:
    """Write (n_rows * n_cols, H, W) grey images in [0, 1] as one grid PNG, row-major.

    Without titles the PNG is pixel-exact: compose_grid's height x width (RGBA, grey values).
    With `column_titles` (one per column, e.g. component ids) the grid is drawn in a figure
    with the titles above the columns, so its size is only approximately that.
    """
    grid = compose_grid(
        images, n_rows=n_rows, n_cols=n_cols, pad=pad, scale=scale, pad_value=pad_value
    )
    if column_titles is None:
        _write_atomic(
            path, lambda tmp: plt.imsave(tmp, grid, cmap="gray", vmin=0.0, vmax=1.0, format="png")
        )
        return
    if len(column_titles) != n_cols:
        raise DataError(f"{len(column_titles)} column titles for {n_cols} columns")
    height, width = grid.shape
    fig = plt.figure(figsize=(max(width / DPI, 1.0), max(height / DPI, 0.5) + 0.5))
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + 0.5 * DPI)))
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    tile_w = (width - (n_cols + 1) * pad) / n_cols
    centres = [pad + col * (tile_w + pad) + (tile_w - 1) / 2 for col in range(n_cols)]
    # Titles shrink with the tiles but stay legible; many columns get vertical titles.
    fontsize = max(5, min(9, math.floor(tile_w / 6)))
    ax.xaxis.tick_top()
    ax.set_xticks(
        centres,
        labels=[str(t) for t in column_titles],
        rotation=90 if n_cols > 12 else 0,
        fontsize=fontsize,
    )
    ax.tick_params(length=0)
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    _save_figure(fig, path, dpi=DPI, bbox_inches="tight", pad_inches=0.05)


# --- labelled sample grids (pixel-exact) ------------------------------------------------------

TITLE_FONT_PT = 7
CAPTION_FONT_PT = 7
CHAR_PX = 6  # approximate width of one character at 7 pt and DPI 100
LINE_PX = 12  # height of one line of 7-pt text at DPI 100
MIN_GRID_FIGURE_WIDTH = 320  # narrow grids get side margins so the caption stays readable


def sample_grid_layout(
    grid_shape: tuple[int, int], column_titles: Sequence[str], tile_width: int, caption: str
) -> tuple[int, int, bool, list[str]]:
    """Pixel layout of `plot_sample_grid`: (title band, width, vertical titles, caption lines).

    Titles stand upright above their column when every line fits in a tile, else they are
    written vertically (one line each) in a band tall enough for the longest. The figure is
    the grid's width (at least MIN_GRID_FIGURE_WIDTH) and title band + grid + caption tall.
    """
    lines = [line for title in column_titles for line in str(title).split("\n")]
    vertical = max((len(line) for line in lines), default=0) * CHAR_PX > tile_width - 4
    if vertical:
        longest = max(len(" ".join(str(t).split("\n"))) for t in column_titles)
        band = 8 + CHAR_PX * longest
    else:
        band = 6 + LINE_PX * max(len(str(t).split("\n")) for t in column_titles)
    width = max(grid_shape[1], MIN_GRID_FIGURE_WIDTH)
    wrapped = textwrap.wrap(caption, width=max(20, (width - 8) // CHAR_PX)) if caption else []
    return band, width, vertical, wrapped


def plot_sample_grid(
    images: Any,
    path: str | os.PathLike[str],
    *,
    n_rows: int,
    n_cols: int,
    column_titles: Sequence[str],
    caption: str = "",
    scale: int = 2,
    pad: int = 2,
    metadata: dict[str, str] | None = None,
) -> tuple[int, int]:
    """Write (n_rows * n_cols, H, W) grey images as a titled grid PNG; return (height, width).

    Unlike `plot_image_grid` with titles, the size is exact and known in advance: the grid
    of `compose_grid` at one image pixel per `scale` x `scale` block, a band of column titles
    above it and the wrapped `caption` below it (see `sample_grid_layout`). `metadata` goes
    into the PNG's text chunks (seed, checkpoint), so a figure says how it was made.
    """
    grid = compose_grid(images, n_rows=n_rows, n_cols=n_cols, pad=pad, scale=scale)
    if len(column_titles) != n_cols:
        raise DataError(f"{len(column_titles)} column titles for {n_cols} columns")
    grid_h, grid_w = grid.shape
    tile_w = (grid_w - (n_cols + 1) * pad) // n_cols
    band, width, vertical, lines = sample_grid_layout(grid.shape, column_titles, tile_w, caption)
    caption_px = LINE_PX * len(lines) + 8 if lines else 0
    height = band + grid_h + caption_px
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    left = (width - grid_w) // 2
    ax = fig.add_axes((left / width, caption_px / height, grid_w / width, grid_h / height))
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    for col, title in enumerate(column_titles):
        x = left + pad + col * (tile_w + pad) + tile_w / 2
        text = " ".join(str(title).split("\n")) if vertical else str(title)
        fig.text(x / width, (caption_px + grid_h + 3) / height, text, ha="center",
                 va="bottom", rotation=90 if vertical else 0, fontsize=TITLE_FONT_PT,
                 linespacing=1.0)
    if lines:
        fig.text(4 / width, (caption_px - 4) / height, "\n".join(lines), ha="left", va="top",
                 fontsize=CAPTION_FONT_PT, linespacing=1.2)
    _save_figure(fig, path, dpi=DPI, metadata=metadata or {})
    return height, width
