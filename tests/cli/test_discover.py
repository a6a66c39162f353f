"""A user's own partly labelled CSV, end to end through the CLI: string class names, empty
cells and a custom unlabelled token, a mask kept as given, a test split, training with room
for new classes, discovery, evaluation of what can be scored, named predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from susl_cli.cli import app
from tests.data_helpers import invoke_ok as _ok

# 40 epochs of 9 steps: enough for this tiny model to give the never-labelled group its own
# components (3 epochs leave it inside the labelled ones).
TRAIN = ["--epochs", "40", "--batch-size", "20", "--labelled-batch-size", "10",
         "--extra-components", "4", "--hidden-units", "16", "--latent-dim", "2",
         "--learning-rate", "0.01", "--marginal-kl", "1", "--checkpoint-every", "40",
         "--quiet", "--device", "cpu"]


def _fails(runner, args: list[str], message: str, code: int = 2) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines


def _user_csv(path: Path, seed: int = 0) -> Path:
    """Three well-separated groups of 4-d rows: 'alpha' and 'beta' partly labelled (beta's
    unlabelled rows say 'unknown'), 'gamma' never labelled; a label-less row is empty."""
    rng = np.random.default_rng(seed)
    names = np.repeat(["alpha", "beta", "gamma"], 80)
    centres = {"alpha": [6, 0, 0, 0], "beta": [0, 6, 0, 0], "gamma": [0, 0, 6, 0]}
    x = np.stack([centres[n] for n in names]) + rng.normal(0, 0.5, (len(names), 4))
    labels = np.where(rng.random(len(names)) < 0.4, names, "").astype(object)
    labels[names == "gamma"] = ""
    labels[(names == "beta") & (labels == "")] = "unknown"
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(label=labels)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def user_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    from typer.testing import CliRunner

    runner = CliRunner()
    folder = tmp_path_factory.mktemp("user-run")
    source = _user_csv(folder / "mine.csv")
    mask, run = folder / "mine.h5", folder / "run.h5"
    _ok(runner, ["mask", "-d", str(source), "--unlabelled-token", "unknown",
                 "--test-fraction", "0.25", "--out", str(mask)])
    _ok(runner, ["train", str(mask), "--out", str(run), *TRAIN])
    return source, mask, run


def test_the_mask_keeps_the_users_labels_and_names(runner, user_run) -> None:
    info = json.loads(_ok(runner, ["info", str(user_run[1]), "--json"]).stdout)
    assert info["class_names"] == ["alpha", "beta"]  # gamma was never labelled: unknown here
    assert info["label_source"] == "as-given" and info["test_fraction"] == 0.25
    assert info["n_test"] == 60 and info["n_train"] == 180
    text = _ok(runner, ["info", str(user_run[1])]).stdout
    assert "as given" in text


def test_training_leaves_room_and_discovery_finds_the_unlabelled_group(runner, user_run):
    info = json.loads(_ok(runner, ["info", str(user_run[2]), "--json"]).stdout)
    assert info["model_config"]["n_components"] == 2 + 4
    found = info["discovery"]
    assert found["class_names"] == ["alpha", "beta", "new-1"]
    assert sum(found["sizes"]) == 180
    # the never-labelled group is a third of the rows and gets a class of its own
    source = pd.read_csv(user_run[0])
    predicted = pd.read_csv(_predict(runner, user_run, user_run[1].parent / "all.csv"))
    gamma = (source[["c"]].to_numpy()[:, 0] > 3)  # the gamma centre is at c = 6
    assert (predicted["class"][gamma] == "new-1").mean() > 0.9
    assert (predicted["class"][~gamma] != "new-1").mean() > 0.9


def test_evaluate_scores_the_labelled_test_rows_and_says_what_it_skipped(runner, user_run):
    payload = json.loads(_ok(runner, ["evaluate", str(user_run[2]), "--json"]).stdout)
    run = payload["runs"][0] if "runs" in payload else payload
    assert run["n_unscored"] > 0  # gamma rows and unlabelled rows have no truth to score
    assert run["metrics"]["n_points"] + run["n_unscored"] == 60
    assert run["metrics"]["novelty_auroc"] is None  # no hidden-class row has a label
    text = _ok(runner, ["evaluate", str(user_run[2])]).stdout
    assert "without a label, not scored" in text


def _predict(runner, user_run, out: Path) -> Path:
    _ok(runner, ["predict", str(user_run[2]), str(user_run[0]), "--out", str(out),
                 "--overwrite"])
    return out


def test_predict_names_rows_with_class_names_and_new_classes(runner, user_run, tmp_path):
    frame = pd.read_csv(_predict(runner, user_run, tmp_path / "p.csv"))
    assert len(frame) == 240
    assert set(frame["class"]) <= {"alpha", "beta"} | {f"new-{i}" for i in range(1, 5)}
    assert frame.novelty.between(0, 1 + 1e-6).all()


def test_discover_again_with_a_known_count(runner, user_run, tmp_path) -> None:
    run = tmp_path / "run.h5"
    run.write_bytes(user_run[2].read_bytes())
    found = json.loads(_ok(runner, ["discover", str(run), "--new-classes", "1", "--json"]).stdout)
    assert found["class_names"] == ["alpha", "beta", "new-1"]
    assert json.loads(_ok(runner, ["info", str(run), "--json"]).stdout)["discovery"] == {
        k: v for k, v in found.items() if k != "checkpoint"}
    assert "new-1" in _ok(runner, ["discover", str(run), "--new-classes", "1"]).stdout
    _fails(runner, ["discover", str(run), "--new-classes", "-1"], "--new-classes must be >= 0")
    _fails(runner, ["discover", str(run), "--new-classes", "99"], "is more than")
    _fails(runner, ["discover", str(run), "--method", "magic"], "--method must be one of")


def test_bad_user_input_is_one_line_and_writes_nothing(runner, tmp_path: Path) -> None:
    out = tmp_path / "m.h5"
    source = _user_csv(tmp_path / "mine.csv")
    empty = tmp_path / "empty.csv"
    pd.read_csv(source).assign(label="").to_csv(empty, index=False)
    ids = tmp_path / "ids.csv"
    pd.DataFrame({"a": np.arange(1500.0), "label": np.arange(1500)}).to_csv(ids, index=False)
    _fails(runner, ["mask", "-d", str(empty), "-o", str(out)], "no training row has a label")
    _fails(runner, ["mask", "-d", str(source), "--label-column", "kind", "-o", str(out)],
           "no label column 'kind'")
    _fails(runner, ["mask", "-d", str(ids), "-o", str(out)], "distinct values")
    _fails(runner, ["mask", "-d", str(source), "--test-fraction", "1.5", "-o", str(out)],
           "--test-fraction must be in (0, 1)")
    _fails(runner, ["mask", "-d", "mnist", "-o", str(out)], "give --labelled-classes")
    _fails(runner, ["mask", "-d", str(source), "--label-fraction", "0.5", "-o", str(out)],
           "give that too")
    one = tmp_path / "one.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "label": ["x", "", ""]}).to_csv(one, index=False)
    _fails(runner, ["mask", "-d", str(one), "--test-fraction", "0.6", "-o", str(out)],
           "without training rows")
    assert not out.exists()


def test_predicting_rows_of_another_width_is_refused(runner, user_run, tmp_path) -> None:
    wide = tmp_path / "wide.csv"
    pd.DataFrame(np.zeros((3, 7))).to_csv(wide, index=False)
    _fails(runner, ["predict", str(user_run[2]), str(wide), "--out", str(tmp_path / "p.csv")],
           "the model was trained on")
