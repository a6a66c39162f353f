"""Every output of every command passes the one output check and the one atomic writer.

For each (command, output option), and the training log `train` writes beside its
checkpoint: writing over any input of the command is refused, the
inputs named on the command line and those read along the way (the mask a run was trained
on) alike; so are a symbolic link, a FIFO, `-`, and an existing file without --overwrite. A
250-character name works (its temporary must fit in 255 bytes). A disk that fills up
part-way leaves an existing file unchanged, no temporary, and exit 2 from every command.
A mask replaced after training is refused by every command that reads a run's mask.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .reliability_helpers import check_clean_error, invoke, leftovers, sha256, write_tiny_npz
from .test_resource_limits import FullDisk

CPU = ["--device", "cpu"]
TINY = ["--epochs", 1, "--hidden-units", 8, "--latent-dim", 2, "--extra-components", 2,
        "--quiet", *CPU]


@dataclass
class Bench:
    folder: Path
    data: Path  # a user .npz
    mask: Path  # made from it
    run: Path  # trained on it (records the mask's path)


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    """Private files: a failing test may destroy them without harming the others."""
    data = write_tiny_npz(tmp_path / "data.npz")
    mask, run = tmp_path / "mask.h5", tmp_path / "run.h5"
    assert invoke(["mask", "-d", data, "-l", "0-1", "-o", mask, "--quiet"]).exit_code == 0
    result = invoke(["train", mask, "-o", run, *TINY])
    assert result.exit_code == 0, result.output
    return Bench(tmp_path, data, mask, run)


# (name, suffix, args given the bench and the output path, the inputs it reads)
Output = tuple[str, str, Callable[[Bench, Path], list], Callable[[Bench], list[Path]]]
OUTPUTS: list[Output] = [
    ("mask", ".h5", lambda b, o: ["mask", "-d", b.data, "-l", "0-1", "-o", o, "--quiet"],
     lambda b: [b.data]),
    ("train", ".h5", lambda b, o: ["train", b.mask, "-o", o, *TINY], lambda b: [b.mask]),
    ("evaluate --csv", ".csv", lambda b, o: ["evaluate", b.run, "--csv", o, "--json", *CPU],
     lambda b: [b.run, b.mask]),
    ("evaluate --plot", ".png", lambda b, o: ["evaluate", b.run, "--plot", o, "--json", *CPU],
     lambda b: [b.run, b.mask]),
    ("evaluate --entropy-plot", ".png",
     lambda b, o: ["evaluate", b.run, "--entropy-plot", o, "--json", *CPU],
     lambda b: [b.run, b.mask]),
    ("sample", ".csv", lambda b, o: ["sample", b.run, "-o", o, "--json", *CPU],
     lambda b: [b.run, b.mask]),
    ("sample .h5", ".h5", lambda b, o: ["sample", b.run, "-o", o, "--json", *CPU],
     lambda b: [b.run, b.mask]),
    ("predict", ".csv", lambda b, o: ["predict", b.run, b.data, "-o", o, "--json", *CPU],
     lambda b: [b.run, b.data, b.mask]),
    ("report", ".html", lambda b, o: ["report", b.run, "-o", o, "--json", *CPU],
     lambda b: [b.run, b.mask]),
]
IDS = [o[0] for o in OUTPUTS]


def _as_input(path: Path, suffix: str) -> Path:
    """A hard link to `path` with the output's suffix: the same file under an output's name."""
    link = path.with_name(f"{path.stem}-linked{suffix}")
    os.link(path, link)
    return link


@pytest.mark.attack_bug("`susl evaluate RUN --csv MASK.h5` (the run's own mask) exited 0 and "
                        "replaced the mask with a CSV; `susl mask -d user.h5 -o user.h5 "
                        "--overwrite` replaced the user's data")
@pytest.mark.parametrize("output", OUTPUTS, ids=IDS)
def test_no_output_replaces_an_input(bench: Bench, output: Output, figures):
    name, suffix, args, inputs = output
    for source in inputs(bench):
        target = source if source.suffix == suffix else _as_input(source, suffix)
        before = sha256(source)
        message = check_clean_error(invoke([*args(bench, target), "--overwrite"]))
        assert "is also an input" in message, (name, source, message)
        assert sha256(source) == before and leftovers(target.parent, target.name) == []
        figures.add("outputs_guarded")


def test_the_training_log_never_replaces_an_input(bench: Bench, figures):
    """`train -o r.h5` also writes r.history.csv: that name, too, may not be an input."""
    log = bench.folder / "r.history.csv"
    os.link(bench.mask, log)  # the mask, under the name of the log of r.h5
    before = sha256(log)
    message = check_clean_error(invoke(["train", log, "-o", bench.folder / "r.h5", *TINY,
                                        "--overwrite"]))
    assert "is also an input" in message, message
    assert sha256(log) == before and not (bench.folder / "r.h5").exists()
    assert leftovers(bench.folder, log.name) == []
    figures.add("outputs_guarded")


def test_user_h5_and_npz_are_inputs_of_mask(bench: Bench, figures):
    import h5py
    import numpy as np

    user = bench.folder / "user.h5"
    with np.load(bench.data) as z, h5py.File(user, "w") as f:
        for key in z.files:
            f[key] = z[key]
    for source in (user, bench.data):
        before = sha256(source)
        message = check_clean_error(invoke(["mask", "-d", source, "-l", "0", "-o", source,
                                            "--overwrite", "--quiet"]))
        assert "is also an input" in message and sha256(source) == before
        figures.add("outputs_guarded")


@pytest.mark.attack_bug("`--out` with `--overwrite` replaced a character device or a symbolic "
                        "link with a regular file; `mask -o -` wrote a file named '-' while "
                        "`predict` refused '-'")
@pytest.mark.parametrize("output", OUTPUTS, ids=IDS)
def test_odd_output_paths_are_refused(bench: Bench, output: Output, monkeypatch, figures):
    name, suffix, args, _ = output
    monkeypatch.chdir(bench.folder)
    target = bench.folder / f"real{suffix}"
    target.write_bytes(b"kept")
    link = bench.folder / f"link{suffix}"
    link.symlink_to(target)
    fifo = bench.folder / f"fifo{suffix}"
    os.mkfifo(fifo)
    cases = {link: "symbolic link", fifo: "FIFO", Path("-"): ""}  # '-': any clear refusal
    for path, expected in cases.items():
        message = check_clean_error(invoke([*args(bench, path), "--overwrite"]))
        assert expected in message, (name, path, message)
        figures.add("outputs_guarded")
    assert link.is_symlink() and target.read_bytes() == b"kept" and not Path("-").exists()
    message = check_clean_error(invoke(args(bench, target)))  # no --overwrite
    assert "--overwrite" in message and target.read_bytes() == b"kept"
    figures.add("outputs_guarded")


@pytest.mark.attack_bug("an output name of 250 characters failed: the temporary file's name "
                        "exceeded 255 bytes")
@pytest.mark.parametrize("output", OUTPUTS, ids=IDS)
def test_a_250_character_name_is_written(bench: Bench, output: Output, figures):
    name, suffix, args, _ = output
    target = bench.folder / ("n" * (250 - len(suffix)) + suffix)
    result = invoke(args(bench, target))
    assert result.exit_code == 0, (name, result.output)
    assert target.stat().st_size > 0
    assert [p.name for p in bench.folder.iterdir() if p.name.startswith(".")] == []
    too_long = bench.folder / ("n" * (256 - len(suffix)) + suffix)
    message = check_clean_error(invoke(args(bench, too_long)))
    assert "255" in message
    figures.add("outputs_guarded", 2)


@pytest.mark.attack_bug("on a full disk `susl evaluate --csv EXISTING` left the old file cut "
                        "mid-row (a new name: a 0-byte file) and exited 3 where mask, train and "
                        "predict exit 2")
@pytest.mark.parametrize("output", OUTPUTS, ids=IDS)
def test_a_full_disk_leaves_the_old_file_whole(bench: Bench, output: Output, monkeypatch,
                                               figures):
    name, suffix, args, _ = output
    old = bench.folder / f"old{suffix}"
    old.write_bytes(b"the previous result\n" * 10)
    new = bench.folder / f"new{suffix}"
    monkeypatch.setattr(os, "fdopen", FullDisk(room=64))
    for target, extra in ((old, ["--overwrite"]), (new, [])):
        result = invoke([*args(bench, target), *extra])
        message = check_clean_error(result)
        assert result.exit_code == 2 and "no space left" in message, (name, message)
        assert leftovers(bench.folder, target.name) == []
        figures.add("resource_cases")
    assert old.read_bytes() == b"the previous result\n" * 10 and not new.exists()


@pytest.mark.attack_bug("`susl evaluate --csv` replaced an existing file without --overwrite")
def test_evaluate_outputs_need_overwrite(bench: Bench, figures):
    csv = bench.folder / "metrics.csv"
    csv.write_text("mine\n")
    message = check_clean_error(invoke(["evaluate", bench.run, "--csv", csv, *CPU]))
    assert "--overwrite" in message and csv.read_text() == "mine\n"
    result = invoke(["evaluate", bench.run, "--csv", csv, "--overwrite", *CPU])
    assert result.exit_code == 0 and csv.read_text().startswith("checkpoint,")
    figures.add("outputs_guarded")


# --- a run's mask replaced after training ---------------------------------------------------

READERS_OF_A_RUNS_MASK = {
    "evaluate": lambda b: ["evaluate", b.run, "--json", *CPU],
    "sample": lambda b: ["sample", b.run, "-o", b.folder / "s.csv", *CPU],
    "predict": lambda b: ["predict", b.run, b.data, "-o", b.folder / "p.csv", *CPU],
    "discover": lambda b: ["discover", b.run],
}


@pytest.mark.attack_bug("train on A.h5, replace A.h5 with another mask: `susl evaluate` "
                        "scored the other mask silently (its JSON still reported the old "
                        "mask_sha256); so did `susl sample`")
@pytest.mark.parametrize("command", sorted(READERS_OF_A_RUNS_MASK))
def test_a_replaced_mask_is_refused(bench: Bench, command: str, figures):
    other = bench.folder / "other.h5"
    assert invoke(["mask", "-d", bench.data, "-l", "0-1", "--seed", 9, "-o", other,
                   "--quiet"]).exit_code == 0
    shutil.copyfile(other, bench.mask)  # same name, other content
    message = check_clean_error(invoke(READERS_OF_A_RUNS_MASK[command](bench)))
    assert "not the mask file" in message and "sha256" in message
    figures.add("replaced_masks")


def test_evaluate_reports_the_mask_it_scored(bench: Bench, figures):
    import json

    result = invoke(["evaluate", bench.run, "--json", *CPU])
    # `evaluate --json` prints {"runs": [one per checkpoint], "summary": {...}}
    [payload] = json.loads(result.stdout)["runs"]
    assert payload["data_sha256"] == payload["mask_sha256"] == sha256(bench.mask)
    other = bench.folder / "other.h5"
    assert invoke(["mask", "-d", bench.data, "-l", "0-1", "--seed", 9, "-o", other,
                   "--quiet"]).exit_code == 0
    [payload] = json.loads(invoke(["evaluate", bench.run, "--data", other, "--json",
                                   *CPU]).stdout)["runs"]  # an explicit --data: user's choice
    assert payload["data_sha256"] == sha256(other) != payload["mask_sha256"]
    figures.add("replaced_masks")


def test_a_replaced_input_does_not_lend_its_inode_number(tmp_path: Path, figures):
    """A resumed run replaces the checkpoint it read; the freed inode number may then be given
    to its next output (the training log), which must not pass for that input."""
    from susl_cli.storage import files
    from susl_cli.storage.atomic import write_atomic

    checkpoint, log = tmp_path / "r.h5", tmp_path / "r.history.csv"
    checkpoint.write_bytes(b"epoch 1")
    log.write_bytes(b"epoch,loss\n")
    with files.command_scope():
        files.note_input(checkpoint)
        write_atomic(checkpoint, b"epoch 2", overwrite=True, may_replace_input=True)
        # as if the file system had reused the old checkpoint's inode number for the log
        info = os.stat(log)
        files._scopes[-1].inputs = {(info.st_dev, info.st_ino): str(checkpoint)}
        write_atomic(log, b"epoch,loss\n1,0.5\n", overwrite=True)
        os.link(checkpoint, tmp_path / "linked.h5")  # while the input keeps its name: refused
        files.note_input(checkpoint)
        with pytest.raises(files.OutputError, match="is also an input"):
            write_atomic(tmp_path / "linked.h5", b"x", overwrite=True)
    assert log.read_bytes() == b"epoch,loss\n1,0.5\n"
    figures.add("outputs_guarded")
