"""Arguments and files that an independent attack (issue 19) turned into internal errors
(exit 70), warnings before the error line, misleading messages or lost output."""

from __future__ import annotations

import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from .reliability_helpers import (
    check_clean_error,
    invoke,
    object_array_npz,
    subprocess_env,
    susl_command,
    write_tiny_npz,
)

CPU = ["--device", "cpu"]
TINY = ["--epochs", 1, "--hidden-units", 8, "--latent-dim", 2, "--quiet", *CPU]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("attack")
    data = write_tiny_npz(root / "d.npz")
    mask, run = root / "mask.h5", root / "run.h5"
    assert invoke(["mask", "-d", data, "-l", "0-1", "-o", mask, "--quiet"]).exit_code == 0
    assert invoke(["train", mask, "-o", run, "--extra-components", 2, *TINY]).exit_code == 0
    return {"root": root, "data": data, "mask": mask, "run": run}


def attack(description: str, *args: object, expect: str) -> object:
    return pytest.param(list(args), expect, marks=pytest.mark.attack_bug(description),
                        id=" ".join(map(str, args[:1] + args[-2:])))


@pytest.mark.parametrize("args, expect", [
    attack("class ranges such as `0-99999999999999999999` in `mask -l` ended in 'internal "
           "error'; `-l 0-300000000` allocated more than 3 GB before failing",
           "mask", "-d", "{data}", "-l", "0-99999999999999999999", "-o", "{out}.h5",
           expect="out of range"),
    attack("class ranges such as `0-99999999999999999999` in `mask -l` ended in 'internal "
           "error'; `-l 0-300000000` allocated more than 3 GB before failing",
           "mask", "-d", "{data}", "-l", "0-300000000", "-o", "{out}.h5", expect="out of range"),
    attack("`sample --components 0-99999999999999999999` ended in 'internal error'",
           "sample", "{run}", "--components", "0-99999999999999999999", "-o", "{out}.csv",
           expect="out of range"),
    attack("`sample --components 0-99999999999999999999` ended in 'internal error'",
           "sample", "{run}", "--components", "1,0-300000000", "-o", "{out}.csv",
           expect="out of range"),
    attack("`train --labelled-mass 1e-300` trained and ended in a NaN loss blamed on the "
           "learning rate", "train", "{mask}", "--labelled-mass", "1e-300",
           "--extra-components", 2, "-o", "{out}.h5", expect="--labelled-mass"),
])
def test_arguments_that_broke_susl(bench, tmp_path: Path, args: list, expect: str, figures):
    values = {"{data}": bench["data"], "{mask}": bench["mask"], "{run}": bench["run"]}
    args = [values.get(a, a) for a in args]
    args = [str(tmp_path / "out") + a[5:] if str(a).startswith("{out}") else a for a in args]
    extra = TINY if args[0] == "train" else CPU if args[0] == "sample" else []
    start = time.monotonic()
    message = check_clean_error(invoke([*args, *extra]))
    assert expect in message and time.monotonic() - start < 30, message
    assert list(tmp_path.iterdir()) == []
    figures.add("fuzz_cases")


def _mask(path: Path):
    return invoke(["mask", "-d", path, "-l", "0-1", "-o", path.with_suffix(".h5"), "--quiet"])


@pytest.mark.attack_bug("an `x` with zero columns ended in 'internal error'")
def test_inputs_with_zero_columns(tmp_path: Path, figures):
    npz = tmp_path / "empty-x.npz"
    np.savez(npz, x=np.zeros((20, 0), np.float32), y=np.arange(20) % 2)
    assert "no values" in check_clean_error(_mask(npz))
    figures.add("fuzz_cases")


@pytest.mark.attack_bug("a feature cell of 1e300 printed a numpy RuntimeWarning (overflow in "
                        "the cast to float32) before the error line")
def test_a_feature_beyond_float32(tmp_path: Path, figures):
    npz = tmp_path / "huge.npz"
    x = np.ones((20, 3))
    x[4, 1] = 1e300
    np.savez(npz, x=x, y=np.arange(20) % 2)
    csv = tmp_path / "huge.csv"
    csv.write_text("a,b,label\n" + "".join(f"{1e300 if i == 3 else i},1,{i % 2}\n"
                                          for i in range(20)))
    for path in (npz, csv):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            message = check_clean_error(_mask(path))
        assert "1e+300" in message and "float32" in message, message
        assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
        figures.add("fuzz_cases")


@pytest.mark.attack_bug("an .npz holding an object array was reported as 'truncated or "
                        "corrupt'")
def test_an_object_array_is_named_as_such(tmp_path: Path, figures):
    marker = tmp_path / "MARKER"
    message = check_clean_error(_mask(object_array_npz(tmp_path / "obj.npz", marker)))
    assert "object array" in message and "truncated" not in message and not marker.exists()
    figures.add("fuzz_cases")


@pytest.mark.attack_bug("`susl info X --json >&-` (standard output closed) exited 0 with its "
                        "output lost")
def test_a_closed_stdout_is_an_error(bench, tmp_path: Path, figures):
    command = " ".join(f"'{a}'" for a in susl_command("info", bench["mask"], "--json"))
    result = subprocess.run(["bash", "-c", f"{command} >&-"], env=subprocess_env(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "standard output is closed" in result.stderr
    figures.add("fuzz_cases")
