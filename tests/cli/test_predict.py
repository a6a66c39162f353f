"""`susl predict` through the CLI runner: every input kind and option, and failure paths."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from susl_cli.cli import app
from susl_cli.predict import COLUMNS
from susl_cli.storage.masked import read_masked_dataset
from tests.data_helpers import assert_one_line_error
from tests.data_helpers import invoke_ok as _ok


@pytest.fixture(scope="module")
def test_x(tiny_image_run) -> np.ndarray:
    return read_masked_dataset(tiny_image_run[0]).x_test  # (40, 6, 6)


def _fails(runner, args, out: Path) -> str:
    """One 'error:' line, no traceback, non-zero exit; `out` absent or left as it was."""
    kept = out.read_text() if out.exists() else None
    line = assert_one_line_error(runner.invoke(app, args), absent=None if kept else out)
    assert kept is None or out.read_text() == kept
    return line


def _table(path: Path, n_rows: int) -> pd.DataFrame:
    frame = pd.read_csv(path)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == n_rows
    assert frame.row.tolist() == list(range(n_rows))
    return frame


def test_mask_file_test_set(runner, tiny_image_run, tmp_path: Path):
    out = tmp_path / "p.csv"
    text = _ok(runner, ["predict", str(tiny_image_run[1]), str(tiny_image_run[0]), "--out",
                        str(out), "--device", "cpu"]).stdout
    frame = _table(out, 40)
    names = set(frame["class"].astype(str))
    assert names <= {"0", "1"} | {f"new-{i}" for i in range(1, 10)}  # 0, 1 labelled
    assert ((frame.novelty >= 0) & (frame.novelty <= 1 + 1e-6)).all()
    assert "entropy >" in text and "labelled training points" in text


def test_split_train_and_json(runner, tiny_image_run, tmp_path: Path):
    out = tmp_path / "p.csv"
    summary = json.loads(_ok(runner, ["predict", str(tiny_image_run[1]), str(tiny_image_run[0]),
                                      "--split", "train", "--out", str(out), "--json"]).stdout)
    frame = _table(out, 200)
    assert summary["n_rows"] == 200 and summary["entropy_quantile"] == 0.95
    assert summary["n_unlike_labelled"] == int(frame.unlike_labelled.sum())
    assert "stored" in summary["mapping_source"] and summary["n_new_classes"] >= 0


def test_entropy_quantile_moves_the_threshold(runner, tiny_image_run, tmp_path: Path):
    def threshold(q: str) -> float:
        out = tmp_path / f"p{q}.csv"
        summary = json.loads(_ok(runner, ["predict", str(tiny_image_run[1]),
                                          str(tiny_image_run[0]), "--out", str(out),
                                          "--entropy-quantile", q, "--json"]).stdout)
        return summary["entropy_threshold"]

    assert threshold("0.5") <= threshold("1.0")


def test_user_npz_csv_and_h5(runner, tiny_image_run, test_x, tmp_path: Path):
    np.savez(tmp_path / "new.npz", x=test_x[:7])
    pd.DataFrame(test_x.reshape(40, -1)).assign(target=0).to_csv(tmp_path / "new.csv",
                                                                index=False)
    with h5py.File(tmp_path / "new.h5", "w") as f:
        f["x"] = test_x[:5]
    run = str(tiny_image_run[1])
    _ok(runner, ["predict", run, str(tmp_path / "new.npz"), "--out", str(tmp_path / "a.csv")])
    _table(tmp_path / "a.csv", 7)
    _ok(runner, ["predict", run, str(tmp_path / "new.csv"), "--label-column", "target",
                 "--out", str(tmp_path / "b.csv")])
    _table(tmp_path / "b.csv", 40)
    _ok(runner, ["predict", run, str(tmp_path / "new.h5"), "--out", str(tmp_path / "c.csv")])
    _table(tmp_path / "c.csv", 5)


def test_explicit_mask_and_overwrite(runner, tiny_real_run, tmp_path: Path):
    out = tmp_path / "p.csv"
    args = ["predict", str(tiny_real_run[1]), str(tiny_real_run[0]), "--out", str(out),
            "--mask", str(tiny_real_run[0])]
    _ok(runner, args)
    out.write_text("keep me")
    assert "--overwrite" in _fails(runner, args, out)
    _ok(runner, [*args, "--overwrite"])
    _table(out, 40)


def test_dataset_name_looks_in_data_dir(runner, tiny_image_run, tmp_path: Path):
    out = tmp_path / "p.csv"
    line = _fails(runner, ["predict", str(tiny_image_run[1]), "mnist", "--data-dir",
                           str(tmp_path), "--out", str(out)], out)
    assert str(tmp_path) in line


def test_mask_file_instead_of_checkpoint(runner, tiny_image_run, tmp_path: Path):
    out = tmp_path / "p.csv"
    line = _fails(runner, ["predict", str(tiny_image_run[0]), str(tiny_image_run[0]),
                           "--out", str(out)], out)
    assert "checkpoint" in line


def test_checkpoint_as_input(runner, tiny_image_run, tmp_path: Path):
    out = tmp_path / "p.csv"
    line = _fails(runner, ["predict", str(tiny_image_run[1]), str(tiny_image_run[1]),
                           "--out", str(out)], out)
    assert "not data" in line


def test_wrong_layout(runner, tiny_image_run, tiny_real_run, tmp_path: Path):
    out = tmp_path / "p.csv"
    line = _fails(runner, ["predict", str(tiny_image_run[1]), str(tiny_real_run[0]),
                           "--out", str(out)], out)
    assert "(6, 6)" in line


def test_unwritable_outputs(runner, tiny_image_run, tmp_path: Path, read_only_dir: Path):
    args = ["predict", str(tiny_image_run[1]), str(tiny_image_run[0]), "--out"]
    missing = tmp_path / "no" / "dir" / "p.csv"
    assert "does not exist" in _fails(runner, [*args, str(missing)], missing)
    assert ".csv" in _fails(runner, [*args, str(tmp_path / "p.txt")], tmp_path / "p.txt")
    _fails(runner, [*args, str(read_only_dir / "p.csv")], read_only_dir / "p.csv")


def test_corrupt_checkpoint(runner, tiny_image_run, damaged_checkpoint, tmp_path: Path):
    out = tmp_path / "p.csv"
    assert "damaged" in _fails(runner, ["predict", str(damaged_checkpoint),
                                        str(tiny_image_run[0]), "--out", str(out)], out)


@pytest.mark.parametrize(("args", "message"), [
    (["--split", "val"], "--split"), (["--entropy-quantile", "1.5"], "--entropy-quantile"),
    (["--mask", "gone.h5"], "does not exist"),
])
def test_bad_values(runner, tiny_image_run, tmp_path: Path, args, message):
    out = tmp_path / "p.csv"
    assert message in _fails(runner, ["predict", str(tiny_image_run[1]), str(tiny_image_run[0]),
                                      "--out", str(out), *args], out)


def test_help_explains_mapping_and_flag(runner):
    out = _ok(runner, ["predict", "--help"]).stdout
    for option in ("--out", "--split", "--entropy-quantile", "--mask", "--data-dir",
                   "--overwrite", "--json", "--label-column"):
        assert option in out
    assert "new-1" in out and "novelty" in out and "unlike_labelled" in out and "quantile" in out
