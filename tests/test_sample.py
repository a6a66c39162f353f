"""Sample grids in the library: component specs, the inverse input transform, column order,
shared z draws, the most confident points, and the three output formats."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest

from susl_cli.errors import DataError, UsageError
from susl_cli.preprocess import fit_transform
from susl_cli.run_meta import RunMeta
from susl_cli.runs import load_model
from susl_cli.sample import (
    SampleOptions,
    build_grid,
    generate_means,
    most_confident,
    order_columns,
    parse_component_spec,
    sample_checkpoint,
    write_samples,
)


def test_component_spec_keeps_the_given_order() -> None:
    assert parse_component_spec("5,0-2,9", 10) == (5, 0, 1, 2, 9)
    assert parse_component_spec(" all ", 3) == (0, 1, 2)
    assert parse_component_spec("3", None) == (3,)  # syntax only: no range check yet


@pytest.mark.parametrize(("spec", "message"), [
    ("0,x", "malformed"), ("4-2", "reversed"), ("1,1", "twice"), ("0-10", "out of range"),
    ("", "malformed"),
])
def test_bad_component_specs(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_component_spec(spec, 10)


def test_options_are_validated_on_creation() -> None:
    with pytest.raises(UsageError, match="--rows"):
        SampleOptions(rows=0)
    with pytest.raises(UsageError, match="malformed"):
        SampleOptions(components="a-b")


def test_to_input_space_inverts_the_pixel_filter() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (50, 3, 4)).astype(np.float32)
    x[:, 0, 0] = 0.5  # a constant pixel: filtered out
    transform = fit_transform(x, "bernoulli")
    assert 0 not in transform.kept
    back = transform.to_input_space(transform.apply(x), fill=np.full(12, 0.5))
    np.testing.assert_allclose(back, x, atol=1e-6)
    assert transform.to_input_space(transform.apply(x))[0, 0, 0] == 0.0  # default fill


def test_to_input_space_undoes_standardisation() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, (40, 5)).astype(np.float32)
    transform = fit_transform(x, "gaussian")
    np.testing.assert_allclose(transform.to_input_space(transform.apply(x)), x, atol=1e-4)
    with pytest.raises(DataError, match="expected"):
        transform.to_input_space(np.zeros((2, 4)))


def test_columns_labelled_first_then_by_class() -> None:
    run = SimpleNamespace(model_config=SimpleNamespace(n_labelled=2, n_components=6),
                          meta=RunMeta("m.h5", "0" * 64, ["a", "b", "c", "d"], [0, 1], 0))
    mapping = np.array([0, 1, 3, 4, 2, 0])  # output classes: a, b, then new-1 (2) ..
    order = order_columns(run, np.array([5, 4, 3, 2, 1, 0]), mapping)
    assert order.tolist() == [0, 1, 5, 4, 2, 3]  # extras: class a, new-1, new-2, new-3


def test_most_confident_sorts_and_leaves_blanks() -> None:
    x = np.arange(5, dtype=np.float32).reshape(5, 1) * 10
    probs = np.array([[0.6, 0.4], [0.9, 0.1], [0.3, 0.7], [0.8, 0.2], [0.55, 0.45]])
    values, probability, index = most_confident(x, probs, np.array([1, 0]), rows=3)
    assert index[:, 1].tolist() == [1, 3, 0]  # component 0, most confident first
    assert index[:, 0].tolist() == [2, -1, -1]  # component 1 has one point
    assert values[0, 0, 0] == 20 and np.isnan(values[1:, 0]).all()
    assert probability[0, 1] == pytest.approx(0.9)


def test_means_are_seeded_and_columns_independent(tiny_real_run) -> None:
    run = load_model(tiny_real_run[1])
    both = generate_means(run, np.array([0, 1]), rows=4, seed=3, fill=0.0)
    again = generate_means(run, np.array([0, 1]), rows=4, seed=3, fill=0.0)
    alone = generate_means(run, np.array([1]), rows=4, seed=3, fill=0.0)
    other = generate_means(run, np.array([0, 1]), rows=4, seed=4, fill=0.0)
    assert both.shape == (4, 2, 12)
    np.testing.assert_array_equal(both, again)
    np.testing.assert_allclose(both[:, 1], alone[:, 0], atol=1e-6)  # shared eps per row
    assert not np.allclose(both, other)


def test_default_grid_uses_the_used_components(tiny_image_run) -> None:
    grid = sample_checkpoint(tiny_image_run[1], SampleOptions(rows=3))
    assert grid.values.shape == (3, len(grid.components), 6, 6)
    assert grid.is_image and grid.mode == "means"
    labelled = [c for c in grid.components if c < 2]
    assert grid.components[: len(labelled)].tolist() == sorted(labelled)
    for c, m in zip(grid.components, grid.mapping, strict=True):
        if c < 2:
            assert m == c  # labelled classes 0-1: component j is class j
    assert "labelled ones first" in grid.caption


def test_explicit_columns_without_the_mask_file(tiny_image_run, tmp_path: Path) -> None:
    run = load_model(tiny_image_run[1])
    run.meta.mask_file = str(tmp_path / "moved.h5")
    grid = build_grid(run, tiny_image_run[1], SampleOptions(components="5,0", rows=2))
    assert grid.components.tolist() == [5, 0]
    stored = run.meta.discovery  # the names come from the stored discovery, no labels
    assert grid.mapped_names == [stored["class_names"][stored["component_class"][5]], "0"]
    with pytest.raises(Exception, match="--data"):
        build_grid(run, tiny_image_run[1], SampleOptions(rows=2))


def test_outputs_in_three_formats(tiny_image_run, tmp_path: Path) -> None:
    grid = sample_checkpoint(tiny_image_run[1], SampleOptions(rows=2, most_confident=True,
                                                              seed=7))
    n_cells = int((grid.point_index >= 0).sum())
    write_samples(grid, tmp_path / "s.csv", overwrite=False)
    frame = pd.read_csv(tmp_path / "s.csv")
    assert list(frame.columns[:6]) == ["component", "mapped_class", "row", "seed",
                                       "point_index", "probability"]
    assert len(frame) == n_cells and frame.shape[1] == 6 + 36 and (frame.seed == 7).all()
    write_samples(grid, tmp_path / "s.h5", overwrite=False)
    with h5py.File(tmp_path / "s.h5") as f:
        assert f.attrs["susl_kind"] == "samples" and int(f.attrs["seed"]) == 7
        assert f["x"].shape == (n_cells, 6, 6)
    height, width = write_samples(grid, tmp_path / "s.png", overwrite=False)
    assert height > 0 and width > 0
