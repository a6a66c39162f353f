"""`susl sample` through the CLI runner: every option, each output format, failure paths."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from matplotlib import image as mpimg
from PIL import Image

from susl_cli.cli import app
from susl_cli.plots import MIN_GRID_FIGURE_WIDTH
from tests.data_helpers import assert_one_line_error
from tests.data_helpers import invoke_ok as _ok

TILE = 54  # 6x6 tiny images are enlarged 9 times (about 56 px)
PAD = 2


def _fails(runner, args, out: Path | None = None) -> str:
    """One 'error:' line on stderr, no traceback, non-zero exit, and no file at `out`."""
    return assert_one_line_error(runner.invoke(app, args), absent=out)


def _grid_size(n_rows: int, n_cols: int) -> tuple[int, int]:
    return n_rows * TILE + (n_rows + 1) * PAD, n_cols * TILE + (n_cols + 1) * PAD


def _check_png(path: Path, summary: dict, n_rows: int) -> None:
    pixels = mpimg.imread(path)
    grid_h, grid_w = _grid_size(n_rows, len(summary["components"]))
    assert pixels.ndim == 3 and list(pixels.shape[:2]) == summary["pixels"]
    assert pixels.shape[1] == max(grid_w, MIN_GRID_FIGURE_WIDTH)
    assert grid_h + 20 < pixels.shape[0] < grid_h + 400  # title band and caption


def test_default_grid_png(runner, tiny_image_run, tmp_path: Path):
    out = tmp_path / "samples.png"
    summary = json.loads(_ok(runner, ["sample", str(tiny_image_run[1]), "--out", str(out),
                                      "--seed", "3", "--json"]).stdout)
    _check_png(out, summary, n_rows=8)
    assert summary["mode"] == "means" and summary["seed"] == 3
    assert Image.open(out).text["Comment"] == "seed=3"  # the seed is in the file


def test_plain_output_names_the_columns(runner, tiny_image_run, tmp_path: Path):
    out = _ok(runner, ["sample", str(tiny_image_run[1]), "--out", str(tmp_path / "s.png"),
                       "--data", str(tiny_image_run[0]), "--device", "cpu"]).stdout
    assert "wrote" in out and "columns (component: class)" in out and "labelled ones" in out


def test_explicit_components_and_rows(runner, tiny_image_run, tmp_path: Path):
    out = tmp_path / "chosen.png"
    summary = json.loads(_ok(runner, ["sample", str(tiny_image_run[1]), "--out", str(out),
                                      "--components", "5,0,2-4", "--rows", "3",
                                      "--json"]).stdout)
    assert summary["components"] == [5, 0, 2, 3, 4]  # in the order given
    assert summary["mapped_classes"][1] == "0"
    _check_png(out, summary, n_rows=3)


def test_most_confident_points(runner, tiny_image_run, tmp_path: Path):
    out = tmp_path / "own.png"
    summary = json.loads(_ok(runner, ["sample", str(tiny_image_run[1]), "--out", str(out),
                                      "--most-confident", "--rows", "4", "--json"]).stdout)
    assert summary["mode"] == "most-confident"
    _check_png(out, summary, n_rows=4)


def test_non_image_data_as_csv(runner, tiny_real_run, tmp_path: Path):
    out = tmp_path / "samples.csv"
    summary = json.loads(_ok(runner, ["sample", str(tiny_real_run[1]), "--out", str(out),
                                      "--rows", "5", "--json"]).stdout)
    frame = pd.read_csv(out)
    assert list(frame.columns[:4]) == ["component", "mapped_class", "row", "seed"]
    assert frame.shape == (5 * len(summary["components"]), 4 + 12)
    assert sorted(frame.component.unique()) == sorted(summary["components"])
    assert summary["pixels"] is None


def test_non_image_data_as_h5_and_seed_changes_draws(runner, tiny_real_run, tmp_path: Path):
    import h5py

    first, second = tmp_path / "a.h5", tmp_path / "b.h5"
    _ok(runner, ["sample", str(tiny_real_run[1]), "--out", str(first), "--seed", "1"])
    _ok(runner, ["sample", str(tiny_real_run[1]), "--out", str(second), "--seed", "2"])
    with h5py.File(first) as a, h5py.File(second) as b:
        assert a.attrs["susl_kind"] == "samples" and int(a.attrs["seed"]) == 1
        assert a["x"].shape == (8 * len(set(a["component"][()])), 12)
        assert (a["x"][()] != b["x"][()]).any()
        n_points = len(a["row"])
    described = json.loads(_ok(runner, ["info", str(first), "--json"]).stdout)
    assert described["kind"] == "samples" and described["seed"] == 1
    assert described["columns"]["x"] == [n_points, 12] and described["mode"] == "means"
    table = _ok(runner, ["info", str(first)]).stdout
    assert "samples" in table and "means (seed 1)" in table


def test_most_confident_csv_has_point_indices(runner, tiny_real_run, tmp_path: Path):
    out = tmp_path / "own.csv"
    _ok(runner, ["sample", str(tiny_real_run[1]), "--out", str(out), "--most-confident",
                 "--rows", "2"])
    frame = pd.read_csv(out)
    assert {"point_index", "probability"} <= set(frame.columns)
    assert (frame.probability > 0).all()


def test_overwrite(runner, tiny_real_run, tmp_path: Path):
    out = tmp_path / "s.csv"
    out.write_text("keep me")
    line = _fails(runner, ["sample", str(tiny_real_run[1]), "--out", str(out)])
    assert "--overwrite" in line and out.read_text() == "keep me"
    _ok(runner, ["sample", str(tiny_real_run[1]), "--out", str(out), "--overwrite"])
    assert out.read_text().startswith("component,")


def test_mask_file_instead_of_checkpoint(runner, tiny_image_run, tmp_path: Path):
    out = tmp_path / "s.png"
    assert "checkpoint" in _fails(runner, ["sample", str(tiny_image_run[0]), "--out", str(out)],
                                  out)


def test_image_grid_of_non_image_data(runner, tiny_real_run, tmp_path: Path):
    out = tmp_path / "s.png"
    line = _fails(runner, ["sample", str(tiny_real_run[1]), "--out", str(out)], out)
    assert ".csv" in line and ".h5" in line


def test_unwritable_outputs(runner, tiny_image_run, tmp_path: Path):
    missing = tmp_path / "no" / "dir" / "s.png"
    assert "does not exist" in _fails(runner, ["sample", str(tiny_image_run[1]), "--out",
                                               str(missing)])
    assert not missing.exists()
    bad_type = tmp_path / "s.jpg"
    assert ".png" in _fails(runner, ["sample", str(tiny_image_run[1]), "--out", str(bad_type)],
                            bad_type)


def test_read_only_folder(runner, tiny_image_run, read_only_dir: Path):
    out = read_only_dir / "s.png"
    line = _fails(runner, ["sample", str(tiny_image_run[1]), "--out", str(out)], out)
    assert "permissions" in line


def test_corrupt_checkpoint(runner, damaged_checkpoint, tmp_path: Path):
    out = tmp_path / "s.png"
    assert "damaged" in _fails(runner, ["sample", str(damaged_checkpoint), "--out", str(out)],
                               out)


@pytest.mark.parametrize(("args", "message"), [
    (["--components", "3-1"], "reversed"), (["--components", "0,99"], "out of range"),
    (["--rows", "0"], "--rows"),
])
def test_bad_values(runner, tiny_image_run, tmp_path: Path, args, message):
    out = tmp_path / "s.png"
    assert message in _fails(runner, ["sample", str(tiny_image_run[1]), "--out", str(out),
                                      *args], out)


def test_help_lists_the_options(runner):
    out = _ok(runner, ["sample", "--help"]).stdout
    for option in ("--out", "--components", "--rows", "--seed", "--most-confident", "--data",
                   "--overwrite", "--json"):
        assert option in out


def test_a_grid_too_big_for_memory_is_refused_up_front(runner, tiny_image_run, tmp_path):
    out = tmp_path / "huge.png"
    result = runner.invoke(app, ["sample", str(tiny_image_run[1]), "--out", str(out),
                                 "--rows", str(10**11)])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--rows" in lines[0] and "available" in lines[0], result.stderr
    assert not out.exists()
