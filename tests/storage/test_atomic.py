"""The one atomic writer (storage/atomic.py), and that every output susl writes goes through it.

Guarantees checked: the content reaches the disk (file and folder fsynced) before the target
name shows it; an exception or Ctrl-C in the middle leaves the old file (or none) and no
temporary; no partial file is ever visible under the target name.
"""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

import susl_cli.storage.atomic as atomic
from susl_cli.cli import app
from susl_cli.data.download import download_file
from susl_cli.errors import DataError, OutputError
from susl_cli.storage.atomic import atomic_output, write_atomic, write_text_atomic
from tests.data_helpers import serve_folder, write_tiny_npz


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".lock")))


def test_content_appears_only_when_the_block_ends(tmp_path: Path):
    target = tmp_path / "out.csv"
    with atomic_output(target, overwrite=False) as fh:
        fh.write(b"a,b\n")
        assert not target.exists()  # nothing under the final name while writing
        assert len(temporaries(tmp_path)) == 2  # the temporary and the output's lock
        fh.write(b"1,2\n")
    assert target.read_bytes() == b"a,b\n1,2\n" and temporaries(tmp_path) == []
    mode = stat.S_IMODE(target.stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask  # not mkstemp's 0600


@pytest.mark.parametrize("existing", [True, False])
def test_an_exception_mid_write_leaves_the_old_file_and_no_temporary(tmp_path: Path,
                                                                      existing: bool):
    target = tmp_path / "table.md"
    if existing:
        target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_output(target, overwrite=True) as fh:
            fh.write(b"new, but only ")
            raise RuntimeError("stopped half-way")
    assert (target.read_bytes() == b"old") if existing else not target.exists()
    assert temporaries(tmp_path) == []


def test_a_failing_disk_is_one_sentence_and_the_old_file_stays(tmp_path: Path, monkeypatch):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OutputError, match="no space left.*left unchanged"):
        write_atomic(target, b"x" * 100, overwrite=True)
    assert target.read_bytes() == b"old" and temporaries(tmp_path) == []


def test_ctrl_c_inside_the_write_is_held_back_then_keeps_the_old_file(tmp_path: Path):
    target = tmp_path / "run.history.csv"
    target.write_bytes(b"old")
    reached_the_end = []
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target, overwrite=True) as fh:
            fh.write(b"new")
            os.kill(os.getpid(), signal.SIGINT)  # held back: the block still runs to its end
            reached_the_end.append(True)
    assert reached_the_end == [True]
    assert target.read_bytes() == b"old" and temporaries(tmp_path) == []


def test_file_and_folder_are_fsynced_before_and_after_the_rename(tmp_path: Path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    write_text_atomic(tmp_path / "r.md", "# report\n", overwrite=False)
    assert events == ["fsync file", "replace", "fsync folder"]
    assert (tmp_path / "r.md").read_text() == "# report\n"


def test_an_existing_file_is_refused_without_overwrite(tmp_path: Path):
    target = tmp_path / "p.csv"
    target.write_bytes(b"keep")
    with pytest.raises(OutputError, match="--overwrite"):
        write_atomic(target, b"new", overwrite=False)
    assert target.read_bytes() == b"keep"


@pytest.fixture
def recorded(monkeypatch) -> set[Path]:
    """The targets `atomic_output` is asked to write (it calls `remove_stale_temporaries`
    once, first, for each)."""
    written: set[Path] = set()
    real_remove = atomic.remove_stale_temporaries

    def record(path: Path) -> list[Path]:
        written.add(Path(path).resolve())
        return real_remove(path)

    monkeypatch.setattr(atomic, "remove_stale_temporaries", record)
    return written


def test_downloads_go_through_the_writer(tmp_path: Path, recorded: set[Path]):
    served = tmp_path / "served"
    served.mkdir()
    (served / "a.bin").write_bytes(b"payload" * 1000)
    dest = tmp_path / "cache" / "a.bin"
    with serve_folder(served) as url:
        download_file(f"{url}/a.bin", dest)
        assert dest.read_bytes() == b"payload" * 1000 and recorded == {dest.resolve()}
        with pytest.raises(DataError, match="sha256"):  # checked before the rename
            download_file(f"{url}/a.bin", tmp_path / "cache" / "b.bin", sha256="0" * 64)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["a.bin"]


def test_every_output_of_every_command_goes_through_the_writer(tmp_path: Path, runner,
                                                               recorded: set[Path]):
    """Each file the commands leave behind was written by `atomic_output`, and no temporary
    or lock file remains."""
    source = write_tiny_npz(tmp_path / "tiny.npz", image=True)
    out = tmp_path / "out"
    out.mkdir()
    mask, run = out / "mask.h5", out / "run.h5"
    tiny = ["--hidden-units", "8", "--latent-dim", "2", "--batch-size", "40",
            "--labelled-batch-size", "10", "--extra-components", "2", "--quiet",
            "--device", "cpu"]
    commands = [
        ["mask", "-d", source, "-l", "0-1", "--out", mask, "--quiet"],
        ["train", mask, "--out", run, "--epochs", "2", *tiny],
        ["discover", run, "--quiet"],
        ["evaluate", run, "--csv", out / "scores.csv", "--plot", out / "confusion.png",
         "--entropy-plot", out / "entropy.png", "--quiet"],
        ["predict", run, mask, "--out", out / "predictions.csv", "--quiet"],
        ["sample", run, "--out", out / "samples.png", "--quiet"],
        ["sample", run, "--out", out / "samples.csv", "--quiet"],
        ["sample", run, "--out", out / "samples.h5", "--quiet"],
        ["report", run, "--out", out / "report.md", "--quiet"],
        ["experiment", "table1", "--dataset", source, "--seeds", "1", "--epochs", "1",
         "--device", "cpu", "--set", "hidden_units=8", "--set", "latent_dim=2",
         "--out", out / "grid", "--quiet"],
    ]
    for args in commands:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, (args[0], result.output)
    files = {p.resolve() for p in out.rglob("*") if p.is_file()}
    assert {mask, run, out / "run.history.csv", out / "scores.csv", out / "report.md",
            out / "grid" / "table1_tiny.csv"} <= {Path(p) for p in files}
    assert files - recorded == set()
    assert temporaries(out) == []
