"""No command writes over a file it reads, even with --overwrite (a typo would destroy it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest

from susl_cli.cli import app
from tests.data_helpers import assert_one_line_error


@pytest.fixture
def own_run(tiny_image_run, tmp_path: Path) -> tuple[Path, Path]:
    """Writable copies of the session's (mask, checkpoint): a failed guard must not be able
    to damage the shared fixture."""
    mask, run = (Path(shutil.copy(p, tmp_path / p.name)) for p in tiny_image_run)
    return mask, run


def _command(name: str, mask: Path, run: Path, tmp_path: Path) -> tuple[list[str], Path]:
    """(arguments, the input the output collides with) for each command that writes a file."""
    csv_input = tmp_path / "points.csv"
    csv_input.write_text(",".join(f"f{i}" for i in range(36)) + "\n" + ",".join(["0"] * 36) + "\n")
    cases = {
        "train onto its mask": (["train", str(mask), "--out", str(mask), "--overwrite",
                                 "--epochs", "1", "--quiet"], mask),
        "sample onto its run": (["sample", str(run), "--out", str(run), "--overwrite"], run),
        "predict onto its csv": (["predict", str(run), str(csv_input), "--out", str(csv_input),
                                  "--overwrite"], csv_input),
        "evaluate csv onto its run": (["evaluate", str(run), "--csv", str(run)], run),
        "evaluate plot onto its mask": (["evaluate", str(run), "--data", str(mask),
                                         "--plot", str(mask)], mask),
    }
    return cases[name]


@pytest.mark.parametrize("name", ["train onto its mask", "sample onto its run",
                                  "predict onto its csv",
                                  "evaluate csv onto its run", "evaluate plot onto its mask"])
def test_output_that_is_an_input_is_refused(runner, own_run, tmp_path: Path, name: str):
    mask, run = own_run
    args, victim = _command(name, mask, run, tmp_path)
    before = victim.read_bytes()
    assert_one_line_error(runner.invoke(app, args), contains="is also an input")
    assert victim.read_bytes() == before


def test_same_file_through_another_name_is_refused(runner, own_run, tmp_path: Path):
    """The check compares files, not spellings: a symlink to the run is the run."""
    _, run = own_run
    alias = tmp_path / "alias.h5"
    alias.symlink_to(run)
    result = runner.invoke(app, ["sample", str(run), "--out", str(alias), "--overwrite"])
    assert_one_line_error(result, contains="is also an input")
    with h5py.File(run, "r") as f:
        assert f.attrs["susl_kind"] == "checkpoint"


def test_distinct_output_still_written(runner, own_run, tmp_path: Path):
    _, run = own_run
    out = tmp_path / "metrics.csv"
    result = runner.invoke(app, ["evaluate", str(run), "--csv", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("checkpoint,")
