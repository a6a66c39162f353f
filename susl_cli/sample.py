"""Looking at what a trained model learnt: sample grids and each component's own points.

Two grids, both with one column per component y (paper Figs 1, 4a, 4b):
- means: the mean of p(x|y,z) for rows of z draws. Rows share one standard-normal draw eps,
  z = mu_y + sigma_y * eps (`SuslModel.sample_means`): for M2 one shared z per row (the same
  "style" in every class), for GM-DGM the same relative position in each component's Gaussian;
- most confident: the reference points assigned to each component (argmax q(y|x)) with the
  highest q(y|x), most confident at the top.

Reference points: the test set of the run's mask file (its training set when it has none).
Default columns: the components q(y|x) uses on them, labelled components first (component j
*is* the j-th labelled class), then the extra components ordered by the class they
majority-map to on those points (unmapped ones last, ties by index); without labels, by index.
Image data (2-D inputs in [0, 1]) becomes a PNG; any data can be written as CSV or HDF5
rows in input space (un-standardised, filtered-out pixels restored).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from susl_cli import __version__
from susl_cli.discovery_runs import discovery_of
from susl_cli.errors import DataError, OutputError, UsageError
from susl_cli.evaluate import predict_probs, resolve_data_file
from susl_cli.index_ranges import RangeWords, expand_ranges
from susl_cli.resources import exceeds_memory, format_bytes
from susl_cli.runs import Run, load_model, resolve_device
from susl_cli.storage.h5 import check_output_path
from susl_cli.storage.masked import read_masked_dataset
from susl_cli.storage.outputs import write_csv_atomic, write_samples_h5

IMAGE_SUFFIXES = (".png",)
TABLE_SUFFIXES = (".csv",)
ARRAY_SUFFIXES = (".h5", ".hdf5")
TILE_PX = 56  # images are enlarged by pixel repetition to about this size
MAX_COMPONENTS = 1_000_000  # before the model is known, larger ids are refused unbuilt


@dataclass(frozen=True)
class SampleOptions:
    """What to draw; validated on creation (the component range once the model is known)."""

    components: str | None = None  # e.g. "0,3,5-9" or "all"; None: the used ones, ordered
    rows: int = 8  # z draws, or points per component with most_confident
    seed: int = 0
    most_confident: bool = False
    data: Path | None = None  # mask file of the reference points; None: the run's own
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise UsageError(f"--rows must be at least 1, got {self.rows}")
        if self.components is not None:
            parse_component_spec(self.components, None)


@dataclass(frozen=True)
class Reference:
    """Points that say which components are used and which class each stands for."""

    x: np.ndarray  # (N, *input_shape) raw inputs
    y: np.ndarray | None  # (N,) their true classes, None when unknown
    name: str  # e.g. "the test set of mask.h5"
    fill: np.ndarray  # (prod(input_shape),) training mean, for pixels the model never saw


@dataclass
class SampleGrid:
    """Rows x columns of examples in input space, and what the columns are."""

    values: np.ndarray  # (R, C, *input_shape); NaN in cells with no point (most confident)
    components: np.ndarray  # (C,) component of each column
    mapping: np.ndarray  # (C,) class of each column: index into class_names
    class_names: list[str]  # labelled classes, then the discovered new-1 .. new-k
    mode: str  # "means" or "most-confident"
    seed: int
    caption: str
    is_image: bool
    checkpoint: str
    probability: np.ndarray | None = None  # (R, C) q(y|x) of the shown points
    point_index: np.ndarray | None = None  # (R, C) index into the reference points, -1 = none
    value_names: list[str] | None = None  # CSV names of the flattened values (default x0..)

    @property
    def mapped_names(self) -> list[str]:
        return [self.class_names[m] for m in self.mapping]

    @property
    def column_titles(self) -> list[str]:
        """Two labelled lines per column: "comp 33" (the component) over "class new-2" (a
        labelled class or a discovered one)."""
        return [f"comp {c}\nclass {name}" for c, name in zip(self.components, self.mapped_names,
                                                             strict=True)]

    def cells(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of every filled cell, column by column."""
        filled = ~np.isnan(self.values.reshape(*self.values.shape[:2], -1)).any(-1)  # (R, C)
        cols, rows = np.nonzero(filled.T)
        return rows, cols

    def arrays(self) -> dict[str, np.ndarray]:
        """One array per output column, one entry per filled cell."""
        rows, cols = self.cells()
        out = {"component": self.components[cols], "mapped_class": self.mapping[cols],
               "row": rows, "x": self.values[rows, cols].astype(np.float32)}
        if self.probability is not None and self.point_index is not None:
            out["point_index"] = self.point_index[rows, cols]
            out["probability"] = self.probability[rows, cols]
        return out

    def frame(self) -> pd.DataFrame:
        """CSV table: component, mapped_class (name), row, seed, [point_index, probability],
        then the flattened input x0..x{D-1}."""
        arrays = self.arrays()
        x = arrays.pop("x").reshape(len(arrays["row"]), -1)
        names = np.asarray(self.class_names, dtype=object)
        head = {"component": arrays["component"], "mapped_class": names[arrays["mapped_class"]],
                "row": arrays["row"], "seed": np.full(len(x), self.seed)}
        head.update({k: arrays[k] for k in ("point_index", "probability") if k in arrays})
        names = self.value_names or [f"x{i}" for i in range(x.shape[1])]
        features = pd.DataFrame(x, columns=names)
        return pd.concat([pd.DataFrame(head), features], axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "mode": self.mode, "seed": self.seed,
                "rows": int(self.values.shape[0]), "components": self.components.tolist(),
                "mapped_classes": self.mapped_names, "caption": self.caption}


def parse_component_spec(spec: str, n_components: int | None) -> tuple[int, ...]:
    """'0,3,5-9' -> (0, 3, 5, 6, 7, 8, 9), in the order given; 'all' -> every component.

    With n_components=None only the syntax is checked, before the model is loaded.
    """
    text = spec.strip().lower()
    if text == "all":
        return tuple(range(n_components)) if n_components is not None else ()
    where = f"--components {spec!r}"
    words = RangeWords("component", where, where, "e.g. '0,3,5-9' or 'all'",
                       "this model has components",
                       f"susl models have at most {MAX_COMPONENTS} components")
    chosen = expand_ranges(text, n_components, MAX_COMPONENTS, words)
    if len(set(chosen)) != len(chosen):
        raise UsageError(f"--components {spec!r} lists a component twice: list each once")
    return tuple(chosen)  # expand_ranges checked each index against n_components


def is_image_run(run: Run) -> bool:
    """Grey images: the mask called the inputs images and each example is 2-D."""
    return run.meta.input_kind == "image" and len(run.transform.input_shape) == 2


def check_sample_path(out: Path, overwrite: bool, inputs: tuple[Path | None, ...] = ()) -> None:
    """Refuse an unknown output type or an unwritable path before the model is loaded."""
    suffix = Path(out).suffix.lower()
    if suffix not in IMAGE_SUFFIXES + TABLE_SUFFIXES + ARRAY_SUFFIXES:
        raise OutputError(f"cannot write samples as {suffix or 'a file without suffix'!r}: give "
                          "--out a .png (images), .csv or .h5 path")
    check_output_path(Path(out), overwrite, inputs)


def load_reference(run: Run, checkpoint: Path, data: Path | None, required: bool
                   ) -> Reference | None:
    """The reference points of the run's mask file (or `data`); None if absent and optional."""
    if data is None and not Path(run.meta.mask_file).exists() and not required:
        return None  # explicit columns can still be drawn, labelled by construction only
    path = resolve_data_file(run, checkpoint, data)  # says how to fix a missing mask file
    masked = read_masked_dataset(path, with_true_labels=True)
    if tuple(masked.x_train.shape[1:]) != run.transform.input_shape:
        raise DataError(f"{str(path)!r} holds inputs of shape {masked.x_train.shape[1:]}, the "
                        f"model was trained on {run.transform.input_shape}: use its own mask")
    fill = masked.x_train.reshape(len(masked.x_train), -1).mean(axis=0)
    if masked.x_test is not None and len(masked.x_test):
        return Reference(masked.x_test, masked.y_test, f"the test set of {path.name}", fill)
    return Reference(masked.x_train, masked.y_train_true, f"the training set of {path.name}",
                     fill)


def order_columns(run: Run, used: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Labelled components first, then extra ones by class (labelled ones, then new-1 ..)."""
    labelled = run.meta.component_classes(run.model_config.n_components) >= 0

    def key(c: int) -> tuple[int, int, int]:
        if labelled[c]:
            return (0, c, c)
        return (1, int(mapping[c]), c)

    return np.asarray(sorted((int(c) for c in used), key=key), dtype=np.int64)


def generate_means(run: Run, components: np.ndarray, rows: int, seed: int,
                   fill: np.ndarray | float) -> np.ndarray:
    """Mean of p(x|y,z) in input space: (rows, C, *input_shape), reproducible from `seed`."""
    _check_grid_fits(run, rows, len(components))
    device = run.model.log_prior.device
    generator = torch.Generator(device=device).manual_seed(seed)
    means = run.model.sample_means(torch.as_tensor(components, dtype=torch.long), rows,
                                   generator)  # (R, C, D)
    flat = means.cpu().numpy().reshape(rows * len(components), -1)
    if run.transform.features != "raw":
        fill = 0.0  # summaries cannot become windows: the means stay in the summary space
    return run.transform.to_input_space(flat, fill).reshape(rows, len(components),
                                                            *run.transform.output_shape)


def _check_grid_fits(run: Run, rows: int, n_columns: int) -> None:
    """Refuse a grid whose float32 activations and outputs could not fit in memory, up front."""
    cfg = run.model_config
    width = cfg.input_dim + int(np.prod(run.transform.input_shape)) + 2 * cfg.hidden_units
    n_bytes = 4 * 3 * rows * n_columns * width  # ~3 live copies (network, numpy, input space)
    available = exceeds_memory(n_bytes)
    if available is not None:
        raise UsageError(f"--rows {rows} x {n_columns} components needs about "
                         f"{format_bytes(n_bytes)}, more than the {format_bytes(available)} "
                         "available: ask for fewer --rows or --components")


def most_confident(x: np.ndarray, probs: np.ndarray, components: np.ndarray, rows: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `rows` points assigned to each component with the highest q(y|x).

    Returns values (R, C, *shape) with NaN where a component has fewer points, their
    probabilities (R, C) and indices into x (R, C, -1 = none).
    """
    assigned = probs.argmax(-1)
    values = np.full((rows, len(components), *x.shape[1:]), np.nan, dtype=np.float32)
    probability = np.full((rows, len(components)), np.nan)
    index = np.full((rows, len(components)), -1, dtype=np.int64)
    for col, c in enumerate(components):
        members = np.flatnonzero(assigned == c)
        best = members[np.argsort(-probs[members, c], kind="stable")][:rows]
        values[: len(best), col] = x[best]
        probability[: len(best), col] = probs[best, c]
        index[: len(best), col] = best
    return values, probability, index


def _caption(options: SampleOptions, ref: Reference | None) -> str:
    """One short paragraph under the figure: what the cells, columns and titles mean."""
    where = ref.name if ref is not None else "the data"
    if options.most_confident:
        what = (f"Per column, the {options.rows} points of {where} assigned to that component "
                "with the highest q(y|x), most confident on top (blank: fewer points).")
    else:
        what = (f"Mean of p(x|y,z); each row is one standard-normal draw shared by all columns "
                f"(seed {options.seed}).")
    if options.components is not None:
        columns = f"Columns: components {options.components}, as asked."
    else:
        columns = (f"Columns: the components used on {where}, labelled ones first, then extra "
                   "ones by class.")
    titles = ("Titles: comp = component, class = the class it stands for (labelled: by "
              "construction; new-i: a class discovered without labels, see `susl info RUN`).")
    return " ".join((what, columns, titles))


def sample_checkpoint(checkpoint: Path, options: SampleOptions) -> SampleGrid:
    """Build the grid `options` asks for from a checkpoint (nothing is written)."""
    run = load_model(Path(checkpoint), resolve_device(options.device))
    return build_grid(run, Path(checkpoint), options)


def build_grid(run: Run, checkpoint: Path, options: SampleOptions) -> SampleGrid:
    """Choose the columns, name their classes and fill the cells (means or own points)."""
    k = run.model_config.n_components
    explicit = (parse_component_spec(options.components, k)
                if options.components is not None else None)
    ref = load_reference(run, checkpoint, options.data,
                         required=options.most_confident or explicit is None)
    probs = predict_probs(run, ref.x) if ref is not None else None  # (N, K)
    discovery, _ = discovery_of(run, checkpoint)
    mapping = np.asarray(discovery.component_class, dtype=np.int64)
    if explicit is not None:
        columns = np.asarray(explicit, dtype=np.int64)
    else:  # ref is required, hence present, without explicit columns
        columns = order_columns(run, np.unique(probs.argmax(-1)), mapping)
    grid = SampleGrid(np.empty(0), columns, mapping[columns], list(discovery.class_names),
                      "most-confident" if options.most_confident else "means", options.seed,
                      _caption(options, ref), is_image_run(run), str(checkpoint))
    if options.most_confident:  # ref is required, hence present
        grid.values, grid.probability, grid.point_index = most_confident(
            ref.x, probs, columns, options.rows)
    else:
        fill = ref.fill if ref is not None else 0.0
        grid.values = generate_means(run, columns, options.rows, options.seed, fill)
        grid.value_names = run.transform.output_names
    return grid


def sample_to_file(checkpoint: Path, out: Path, options: SampleOptions,
                   overwrite: bool = False) -> dict[str, Any]:
    """Check `out`, build the grid and write it; returns a summary of what was written."""
    check_sample_path(out, overwrite, inputs=(Path(checkpoint), options.data))
    run = load_model(Path(checkpoint), resolve_device(options.device))
    if Path(out).suffix.lower() in IMAGE_SUFFIXES and not is_image_run(run):
        raise UsageError(f"{str(checkpoint)!r} was trained on non-image data (inputs of shape "
                         f"{run.transform.input_shape}), which cannot be drawn: give --out a "
                         ".csv or .h5 path to get the generated vectors")
    grid = build_grid(run, Path(checkpoint), options)
    pixels = write_samples(grid, Path(out), overwrite)
    return {**grid.to_dict(), "out": str(out), "pixels": pixels}


def write_samples(grid: SampleGrid, out: Path, overwrite: bool) -> list[int] | None:
    """Write the grid as PNG (images only; returns [height, width]), CSV or HDF5 rows."""
    suffix = Path(out).suffix.lower()
    if suffix in TABLE_SUFFIXES:
        write_csv_atomic(out, grid.frame(), overwrite)
        return None
    if suffix in ARRAY_SUFFIXES:
        meta = {**grid.to_dict(), "class_names": grid.class_names,
                "susl_version": __version__}
        if grid.value_names:  # x holds summaries, not raw inputs: say which column is which
            meta["value_names"] = grid.value_names
        write_samples_h5(out, grid.arrays(), meta, grid.seed, overwrite)
        return None
    if not grid.is_image:
        raise UsageError("only image data can be drawn: give --out a .csv or .h5 path")
    from susl_cli import plots  # matplotlib is slow to import: only when a figure is asked for

    rows, cols, height, width = grid.values.shape
    tiles = np.nan_to_num(grid.values, nan=1.0).reshape(rows * cols, height, width)
    size = plots.plot_sample_grid(
        tiles, out, n_rows=rows, n_cols=cols, column_titles=grid.column_titles,
        caption=grid.caption, scale=max(1, round(TILE_PX / max(height, width))),
        metadata={k: _latin1(v) for k, v in (
            ("Title", f"susl sample ({grid.mode})"), ("Description", grid.caption),
            ("Software", f"susl {__version__}"), ("Source", grid.checkpoint),
            ("Comment", f"seed={grid.seed}"))})
    return list(size)


def _latin1(text: str) -> str:
    """PNG text chunks hold Latin-1 only; replace anything else rather than fail."""
    return text.encode("latin-1", "replace").decode("latin-1")
