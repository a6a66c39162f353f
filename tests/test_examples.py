"""The examples stay in step with the CLI: every option they use exists, and the Python one runs.

Running the shell examples end to end takes minutes (full datasets); their commands are the
ones README and the CLI tests exercise, so here each `susl` line is checked against the
command's own --help, which is what drifts when options are renamed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from susl_cli.cli import app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.sh"))


def _susl_commands(script: Path) -> list[tuple[str, list[str]]]:
    """(subcommand, [--options]) for each `susl ...` command, continuation lines joined."""
    text = script.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("susl "):
            words = line.split()
            commands.append((words[1], [w for w in words[2:] if w.startswith("--")]))
    return commands


def test_there_are_examples_of_each_kind() -> None:
    assert len(SCRIPTS) >= 2 and (EXAMPLES / "classify_new_data.py").exists()
    listed = (EXAMPLES / "README.md").read_text()
    for path in [*SCRIPTS, EXAMPLES / "classify_new_data.py", EXAMPLES / "python_api.py"]:
        assert f"`{path.name}`" in listed, f"{path.name} is not described in examples/README.md"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_examples_parse_and_use_existing_options(script: Path, runner) -> None:
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    commands = _susl_commands(script)
    assert commands, f"{script.name} runs no susl command"
    for command, options in commands:
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, f"{script.name}: `susl {command}` is not a command"
        known = set(re.findall(r"--[a-z][a-z-]*", result.stdout))
        unknown = [o for o in options if o.split("=")[0] not in known]
        assert not unknown, f"{script.name}: `susl {command}` has no {unknown}"


def test_python_example_classifies_a_mask_test_set(tiny_real_run) -> None:
    mask, run = tiny_real_run
    result = subprocess.run([sys.executable, str(EXAMPLES / "classify_new_data.py"), str(run),
                             str(mask)], capture_output=True, text=True, check=False,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "40 rows from 40 test rows" in result.stdout
    assert re.search(r"q\(y\|x\) has 6 columns: components 0\.\.1 are the labelled", result.stdout)


def test_python_example_errors_are_one_line(tmp_path: Path, tiny_real_run) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "classify_new_data.py"),
                             str(tiny_real_run[1]), str(tmp_path / "missing.npz")],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error:") and len(result.stderr.splitlines()) == 1


def test_partly_labelled_csv_example_masks_as_the_readme_says(tmp_path: Path, runner) -> None:
    """The README's own-file example: the CSV has word labels, empty cells and five classes
    nobody labelled; `susl mask` keeps the labels as given and splits off a test set."""
    import json

    import pandas as pd

    from susl_cli.cli import app

    csv, truth = tmp_path / "digits.csv", tmp_path / "digits-truth.csv"
    subprocess.run([sys.executable, str(EXAMPLES / "make_partly_labelled_csv.py"), str(csv),
                    "--truth", str(truth)], check=True, capture_output=True)
    frame = pd.read_csv(csv, keep_default_na=False)
    assert len(frame) == 1797 and frame.shape[1] == 65
    assert set(frame.label) == {"", "zero", "one", "two", "three", "four"}
    assert set(pd.read_csv(truth).true_class) >= {"five", "nine"}
    readme = (EXAMPLES.parent / "README.md").read_text()
    line = "susl mask --dataset digits.csv --test-fraction 0.2 --out digits.h5"
    assert line in readme
    args = line.split()[1:]
    args[args.index("digits.csv")] = str(csv)
    args[args.index("digits.h5")] = str(tmp_path / "digits.h5")
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["class_names"] == ["four", "one", "three", "two", "zero"]  # alphabetical
    assert info["label_source"] == "as-given" and info["n_test"] + info["n_train"] == 1797


def test_python_api_example_fits_predicts_and_round_trips(tmp_path: Path) -> None:
    """examples/python_api.py on scikit-learn's digits, one epoch (its default is ~200)."""
    result = subprocess.run([sys.executable, str(EXAMPLES / "python_api.py"), "--epochs", "1",
                             "--save", str(tmp_path / "run.h5")], capture_output=True,
                            text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^classes: four, one, three, two, zero", result.stdout, re.M)
    assert re.search(r"predict_proba: 360 rows x \d+ classes", result.stdout)
    assert "loaded again: same predictions" in result.stdout
    assert (tmp_path / "run.h5").is_file()
