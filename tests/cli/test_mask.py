"""`susl mask` and `susl info` through the CLI runner: success paths, --help, every failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from susl_cli.cli import app
from susl_cli.storage.h5 import KIND_CHECKPOINT, atomic_h5_write
from susl_cli.storage.masked import read_masked_dataset
from tests.data_helpers import assert_one_line_error, write_idx, write_npz

MNIST_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
FASHION_COUNTS = [6000] * 10
HAR_COUNTS = [1226, 1073, 986, 1286, 1374, 1407]


def _mask(runner, *args: str):
    return runner.invoke(app, ["mask", *args])


# --- real datasets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "spec", "counts", "n_test"),
    [("mnist", "0-4", MNIST_COUNTS, 10000), ("fashion-mnist", "0-4", FASHION_COUNTS, 10000),
     ("har", "0-2", HAR_COUNTS, 2947)],
)
def test_mask_real_dataset_paper_protocol(runner, data_dir: Path, tmp_path: Path, name: str,
                                          spec: str, counts: list[int], n_test: int) -> None:
    out = tmp_path / f"{name}.h5"
    result = _mask(runner, "--dataset", name, "--labelled-classes", spec, "--out", str(out),
                   "--data-dir", str(data_dir), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    n_labelled_classes = len(counts) // 2
    expected = [round(0.2 * n) for n in counts[:n_labelled_classes]]
    masked = read_masked_dataset(out)
    assert len(masked.x_train) == sum(counts) and len(masked.x_test) == n_test
    observed = masked.y_observed
    assert np.bincount(observed[observed >= 0]).tolist() == expected
    assert summary["n_labelled"] == sum(expected) and summary["regime"] == "SUS"
    assert summary["hidden_classes"] == list(range(n_labelled_classes, len(counts)))


# --- synthetic user data ---------------------------------------------------------------------


def test_mask_user_npz_table_and_info(runner, tmp_path: Path) -> None:
    src = write_npz(tmp_path / "d.npz", n=90, n_classes=3)
    out = tmp_path / "m.h5"
    result = _mask(runner, "-d", str(src), "-l", "0,2", "--labels-per-class", "5", "-o", str(out))
    assert result.exit_code == 0, result.output
    for text in ("semi-unsupervised (SUS)", "hidden classes", "0:5  2:5", "90", "m.h5"):
        assert text in result.stdout
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and "semi-unsupervised (SUS)" in info.stdout
    summary = json.loads(runner.invoke(app, ["info", str(out), "--json"]).stdout)
    assert summary["labelled_counts"] == [5, 0, 5] and summary["labels_per_class"] == 5
    assert summary["n_test"] is None and summary["dataset"] == "d.npz"


@pytest.mark.parametrize(("spec", "regime"), [("none", "US"), ("all", "SS"), ("1", "SUS")])
def test_mask_regimes(runner, tmp_path: Path, spec: str, regime: str) -> None:
    src = write_npz(tmp_path / "d.npz", n=60, n_classes=3)
    out = tmp_path / "m.h5"
    result = _mask(runner, "-d", str(src), "-l", spec, "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["regime"] == regime


def test_mask_csv_with_existing_unlabelled_rows(runner, tmp_path: Path) -> None:
    src = tmp_path / "d.csv"
    rows = [f"{i},{i * 2},{'' if i % 4 == 0 else i % 2}" for i in range(40)]
    src.write_text("f1,f2,target\n" + "\n".join(rows) + "\n")
    out = tmp_path / "m.h5"
    result = _mask(runner, "-d", str(src), "-l", "all", "--label-fraction", "1",
                   "--label-column", "target", "-o", str(out), "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # --quiet
    masked = read_masked_dataset(out)
    assert (masked.y_observed[::4] == -1).all() and (masked.y_observed >= 0).sum() == 30


def test_same_seed_same_file_contents(runner, tmp_path: Path) -> None:
    src = write_npz(tmp_path / "d.npz", n=200, n_classes=4)
    masks = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        out = tmp_path / f"{name}.h5"
        result = _mask(runner, "-d", str(src), "-l", "0-1", "--seed", seed, "-o", str(out))
        assert result.exit_code == 0, result.output
        masks.append(read_masked_dataset(out).y_observed)
    assert np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[0], masks[2])


def test_overwrite_flag_replaces(runner, tmp_path: Path) -> None:
    src = write_npz(tmp_path / "d.npz")
    out = tmp_path / "m.h5"
    assert _mask(runner, "-d", str(src), "-l", "0", "-o", str(out)).exit_code == 0
    result = _mask(runner, "-d", str(src), "-l", "1", "-o", str(out), "--overwrite")
    assert result.exit_code == 0 and read_masked_dataset(out).labelled_classes == (1,)


def test_help_texts(runner) -> None:
    result = runner.invoke(app, ["mask", "--help"])
    assert result.exit_code == 0
    for option in ("--dataset", "--labelled-classes", "--label-fraction", "--labels-per-class",
                   "--seed", "--label-column", "--data-dir", "--download", "--overwrite",
                   "--json", "--out", "0-4"):
        assert option in result.stdout
    assert runner.invoke(app, ["info", "--help"]).exit_code == 0


# --- failures: one line on stderr, non-zero exit, nothing written ----------------------------


def _bad_npz_cases(tmp: Path) -> dict[str, Path]:
    y_short = write_npz(tmp / "short.npz", y=np.arange(59) % 3)
    nan = write_npz(tmp / "nan.npz", x=np.r_[np.zeros((59, 4)), [[0, np.nan, 0, 0]]])
    inf = write_npz(tmp / "inf.npz", x=np.r_[np.zeros((59, 4)), [[0, np.inf, 0, 0]]])
    truncated = write_npz(tmp / "trunc.npz", n=500)
    truncated.write_bytes(truncated.read_bytes()[:-300])
    return {"short": y_short, "nan": nan, "inf": inf, "trunc": truncated}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", "cifar10", "-l", "0-4"], "unknown dataset 'cifar10'"),
        (["-d", "{npz}", "-l", "0-3"], "class 3 in '0-3' is out of range"),
        (["-d", "{npz}", "-l", "0-x"], "malformed class spec"),
        (["-d", "{npz}", "-l", "0,1,0"], "class 0 appears twice"),
        (["-d", "{gap}", "-l", "1"], "class 1 in '1' is not in the data"),
        (["-d", "{npz}", "-l", "0", "--label-fraction", "0"], "must be in (0, 1]"),
        (["-d", "{npz}", "-l", "0", "--label-fraction", "1.5"], "must be in (0, 1]"),
        (["-d", "{npz}", "-l", "0", "--label-fraction", "0.5", "--labels-per-class", "3"],
         "not both"),
        (["-d", "{npz}", "-l", "0", "--labels-per-class", "21"], "more than class 0 has (20"),
        (["-d", "{short}", "-l", "0"], "60 rows but y has 59"),
        (["-d", "{nan}", "-l", "0"], "NaN or infinite values (first in row 59)"),
        (["-d", "{inf}", "-l", "0"], "NaN or infinite values (first in row 59)"),
        (["-d", "{trunc}", "-l", "0"], "trunc.npz"),
        (["-d", "{csv}", "-l", "0"], "column(s) colour are not numeric"),
        (["-d", "{badh5}", "-l", "0"], "not a readable HDF5 file"),
        (["-d", "{masked}", "-l", "0"], "already a susl masked dataset"),
        (["-d", "{tmp}/missing.npz", "-l", "0"], "does not exist"),
    ],
)
def test_mask_failures(runner, tmp_path: Path, args: list[str], message: str) -> None:
    files = _bad_npz_cases(tmp_path)
    files["npz"] = write_npz(tmp_path / "d.npz", n=60, n_classes=3)
    files["gap"] = write_npz(tmp_path / "gap.npz", y=np.arange(60) % 3 * 2 % 4)  # no class 1
    files["csv"] = tmp_path / "t.csv"
    files["csv"].write_text("a,colour,label\n1,red,0\n2,blue,1\n")
    files["badh5"] = tmp_path / "b.h5"
    files["badh5"].write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 50)
    files["masked"] = tmp_path / "already.h5"
    made = _mask(runner, "-d", str(files["npz"]), "-l", "0", "-o", str(files["masked"]))
    assert made.exit_code == 0
    filled = [a.format(tmp=tmp_path, **{k: str(v) for k, v in files.items()}) for a in args]
    out = tmp_path / "out.h5"
    result = _mask(runner, *filled, "-o", str(out))
    assert_one_line_error(result, absent=out, contains=message)


def test_missing_data_files(runner, tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    result = _mask(runner, "-d", "mnist", "-l", "0-4", "--data-dir", str(tmp_path / "empty"),
                   "-o", str(out))
    assert_one_line_error(result, absent=out, contains="--download")


def test_truncated_idx_file(runner, tmp_path: Path, data_dir: Path) -> None:
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for f in (data_dir / "mnist").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(10))  # wrong contents
    out = tmp_path / "out.h5"
    result = _mask(runner, "-d", "mnist", "-l", "0-4", "--data-dir", str(tmp_path / "data"),
                   "-o", str(out))
    assert_one_line_error(result, absent=out, contains="truncated or corrupt")


def test_har_features_not_offline(runner, tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "out.h5"
    result = _mask(runner, "-d", "har-features", "-l", "0-2", "--data-dir", str(data_dir),
                   "-o", str(out))
    assert_one_line_error(result, absent=out, contains="not in the offline copy")


def test_output_in_missing_folder_fails_before_loading(runner, tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "m.h5"
    # The dataset does not exist either: the output check must come first.
    result = _mask(runner, "-d", "mnist", "-l", "0-4", "--data-dir", str(tmp_path), "-o", str(out))
    assert_one_line_error(result, absent=out, contains="does not exist: create it first")


def test_existing_output_is_not_clobbered(runner, tmp_path: Path) -> None:
    src = write_npz(tmp_path / "d.npz")
    out = tmp_path / "m.h5"
    out.write_bytes(b"precious")
    result = _mask(runner, "-d", str(src), "-l", "0", "-o", str(out))
    assert_one_line_error(result, contains="--overwrite")
    assert out.read_bytes() == b"precious"


def test_info_failures(runner, tmp_path: Path) -> None:
    not_h5 = tmp_path / "x.h5"
    not_h5.write_text("hello")
    assert_one_line_error(runner.invoke(app, ["info", str(not_h5)]), contains="not an HDF5")
    assert_one_line_error(runner.invoke(app, ["info", str(tmp_path / "none.h5")]),
                          contains="does not exist")
    ckpt = tmp_path / "c.h5"
    with atomic_h5_write(ckpt, KIND_CHECKPOINT, overwrite=False):
        pass
    assert_one_line_error(runner.invoke(app, ["info", str(ckpt)]), contains="damaged or incomplete")
