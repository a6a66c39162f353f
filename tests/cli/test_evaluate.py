"""`susl evaluate` through the CLI runner: tables, JSON, CSV, figures and failure paths."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from matplotlib import image as mpimg

from susl_cli.cli import app
from tests.data_helpers import assert_one_line_error
from tests.data_helpers import invoke_ok as _ok


def test_table_names_each_metric_by_its_protocol(runner, tiny_image_run):
    out = _ok(runner, ["evaluate", str(tiny_image_run[1]), "--device", "cpu"]).stdout
    assert "cluster accuracy (majority mapping" in out
    assert "Hungarian" in out and "fitted on test" in out
    assert "true class x mapped class" in out
    assert "true class x component" not in out


def test_raw_matrix_on_request(runner, tiny_image_run):
    out = _ok(runner, ["evaluate", str(tiny_image_run[1]), "--raw"]).stdout
    assert "true class x component" in out


def test_json_is_machine_readable(runner, tiny_image_run):
    out = _ok(runner, ["evaluate", str(tiny_image_run[1]), "--json"]).stdout
    payload = json.loads(out)
    assert set(payload) == {"runs", "summary"}  # the same shape as for several runs
    assert len(payload["runs"]) == 1 and payload["summary"]["nmi"]["sd"] is None
    assert payload["runs"][0]["model"] == "gmdgm"
    metrics = payload["runs"][0]["metrics"]
    for key in ("cluster_acc_majority", "cluster_acc_hungarian", "known_acc_classifier",
                "novel_acc_majority", "nmi", "ari", "n_components_used"):
        assert key in metrics
    assert metrics["mapping_fit"] == "test"


def test_fit_mapping_train_is_reported(runner, tiny_image_run):
    out = _ok(runner, ["evaluate", str(tiny_image_run[1]), "--fit-mapping", "train",
                       "--json"]).stdout
    assert json.loads(out)["runs"][0]["metrics"]["mapping_fit"] == "train"


def test_several_runs_give_mean_and_sd(runner, tiny_image_run, tmp_path: Path):
    run = str(tiny_image_run[1])
    table = _ok(runner, ["evaluate", run, run]).stdout
    assert "2 runs" in table or "mean" in table
    payload = json.loads(_ok(runner, ["evaluate", run, run, "--json"]).stdout)
    assert len(payload["runs"]) == 2
    assert payload["summary"]["cluster_acc_majority"]["sd"] == 0.0
    csv = tmp_path / "runs.csv"
    _ok(runner, ["evaluate", run, run, "--csv", str(csv), "--json"])
    frame = pd.read_csv(csv)
    assert len(frame) == 2 and "cluster_acc_majority" in frame.columns


def test_figures_are_valid_pngs(runner, tiny_image_run, tmp_path: Path):
    paths = {name: tmp_path / f"{name}.png" for name in ("plot", "entropy-plot", "tsne")}
    args = ["evaluate", str(tiny_image_run[1])]
    for name, path in paths.items():
        args += [f"--{name}", str(path)]
    _ok(runner, args)
    # Figure sizes in inches x 100 dpi (susl_cli/plots.py); the confusion matrix grows with
    # the 4 classes + "unmapped" column of the tiny data.
    expected = {"plot": (360, 475), "entropy-plot": (400, 600), "tsne": (550, 650)}
    for name, path in paths.items():
        pixels = mpimg.imread(path)
        assert pixels.ndim == 3 and pixels.shape[:2] == expected[name], (name, pixels.shape)


def test_mask_file_instead_of_checkpoint(runner, tiny_image_run):
    line = assert_one_line_error(runner.invoke(app, ["evaluate", str(tiny_image_run[0])]))
    assert "checkpoint" in line


def test_runs_of_different_masks_need_allow_mixed(runner, tiny_image_run, tiny_real_run):
    runs = [str(tiny_image_run[1]), str(tiny_real_run[1])]
    line = assert_one_line_error(runner.invoke(app, ["evaluate", *runs]))
    assert "--allow-mixed" in line
    _ok(runner, ["evaluate", *runs, "--allow-mixed", "--json"])


def test_unwritable_figure_path(runner, tiny_image_run, tmp_path: Path):
    target = tmp_path / "no" / "such" / "dir" / "c.png"
    assert_one_line_error(runner.invoke(app, ["evaluate", str(tiny_image_run[1]), "--plot",
                                        str(target)]))
    assert not target.exists()


def test_bad_fit_mapping_value(runner, tiny_image_run):
    line = assert_one_line_error(runner.invoke(app, ["evaluate", str(tiny_image_run[1]),
                                               "--fit-mapping", "val"]))
    assert "--fit-mapping" in line


def test_help_lists_the_outputs(runner):
    out = _ok(runner, ["evaluate", "--help"]).stdout
    for option in ("--fit-mapping", "--plot", "--entropy-plot", "--tsne", "--csv", "--json",
                   "--allow-mixed", "--raw"):
        assert option in out


def test_raw_matrix_lists_only_the_components_used(runner, tiny_image_run):
    import numpy as np

    from susl_cli.evaluate import evaluate_checkpoint

    e = evaluate_checkpoint(tiny_image_run[1], None, "test", "cpu")
    used = np.flatnonzero(np.asarray(e.metrics.contingency).sum(axis=0))
    out = _ok(runner, ["evaluate", str(tiny_image_run[1]), "--raw"]).stdout
    raw = out[out.index("true class x component:"):]
    header = next(line for line in raw.splitlines() if "true \\ predicted" in line)
    assert header.split("┃")[2:-1] and [c.strip() for c in header.split("┃")[2:-1]] == [
        str(j) for j in used]
    assert f"the {len(used)} of {e.run.model_config.n_components} components used" in out
