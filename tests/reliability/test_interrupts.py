"""Ctrl-C (SIGINT) gives the same outcome in every command and every phase: one line
`error: interrupted`, exit 130, and nothing partial (an output is whole or absent; no
temporary left). A Ctrl-C that arrives after the work is done changes nothing.

Phases: while the CLI imports torch (before: a 52-line traceback), while HDF5 builds a file
(before: swallowed by a weakref callback, "Exception ignored in ...", exit 0), inside a
write (every command), and during a training epoch before any checkpoint exists (before:
"0 finished epochs are saved in OUT: continue with --resume" for an OUT that did not exist).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import susl_cli.train as train_module

from .reliability_helpers import (
    check_clean_error,
    invoke,
    leftovers,
    subprocess_env,
    susl_command,
    write_tiny_npz,
)

CPU = ["--device", "cpu"]
TINY = ["--epochs", 1, "--hidden-units", 8, "--latent-dim", 2, "--extra-components", 2,
        "--quiet", *CPU]


# Shared libraries whose mapping shows the child is in its heavy imports (our start-up handler
# is installed by then). Commands are imported lazily: `susl mask` never loads torch.
TORCH, NUMPY = "libtorch", "_multiarray_umath"


def _loading(pid: int, library: str) -> bool:
    """True once the child maps `library`."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _interrupt(args: list, env: dict, cwd: Path, delay: float,
               library: str = TORCH) -> subprocess.CompletedProcess:
    """Start `susl ARGS`, SIGINT it `delay` s after `library` starts loading, wait for it."""
    child = subprocess.Popen(susl_command(*args), env=env, cwd=cwd, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while (not _loading(child.pid, library) and child.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.005)
    time.sleep(delay)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    return subprocess.CompletedProcess(child.args, child.returncode, out.decode(), err.decode())


def _check_outcome(result: subprocess.CompletedProcess, out: Path) -> str:
    """Interrupted (one line, 130, no output) or finished first (0, whole output)."""
    detail = f"exit {result.returncode}; stderr {result.stderr!r}"
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr, detail
    if result.returncode == 0:
        assert result.stderr == "" and out.exists(), detail
        assert invoke(["info", out]).exit_code == 0  # whole
        return "finished"
    assert result.returncode == 130 and result.stderr == "error: interrupted\n", detail
    # absent, or whole when Ctrl-C came after the rename (while the summary was being made)
    assert not out.exists() or invoke(["info", out]).exit_code == 0, detail
    assert leftovers(out.parent, out.name) == [], detail
    return "interrupted"


@pytest.fixture(scope="module")
def wide_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40000 x 256 random floats: compressing its mask keeps HDF5 busy for a few seconds."""
    path = tmp_path_factory.mktemp("wide") / "wide.npz"
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), 10000)
    np.savez(path, x=rng.normal(size=(40000, 256)).astype(np.float32), y=y)
    return path


@pytest.mark.attack_bug("SIGINT 8-12 s into `susl mask` was ignored in 5 of 5 tries (exit 0, "
                        "output written, 'Exception ignored in ... KeyboardInterrupt'); Ctrl-C "
                        "while the CLI imported torch printed a 52-line traceback")
def test_sigint_in_every_phase_of_mask(wide_npz: Path, tmp_path: Path, figures):
    env = subprocess_env(tmp_path)
    out = tmp_path / "m.h5"
    args = ["mask", "-d", wide_npz, "-l", "0-1", "-o", out, "--quiet"]
    start = time.monotonic()
    assert subprocess.run(susl_command(*args), env=env, capture_output=True).returncode == 0
    duration = time.monotonic() - start
    out.unlink()
    outcomes = []
    for fraction in (0.0, 0.25, 0.5, 0.7):  # imports, reading, masking, HDF5, writing
        result = _interrupt(args, env, tmp_path, fraction * duration, NUMPY)
        outcomes.append(_check_outcome(result, out))
        out.unlink(missing_ok=True)
        figures.add("interrupts")
    assert outcomes[0] == "interrupted" and outcomes.count("interrupted") >= 2, outcomes


def test_sigint_while_evaluate_loads(tiny_image_run, tmp_path: Path, figures):
    _, run = tiny_image_run
    csv = tmp_path / "e.csv"
    result = _interrupt(["evaluate", run, "--csv", csv, *CPU], subprocess_env(tmp_path),
                        tmp_path, 0.0)
    assert result.returncode == 130 and result.stderr == "error: interrupted\n", result.stderr
    assert not csv.exists()
    figures.add("interrupts")


class _InterruptOnFsync:
    """os.fsync that first sends this process a real SIGINT: Ctrl-C inside a write."""

    def __init__(self) -> None:
        self.real = os.fsync

    def __call__(self, fd: int) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        self.real(fd)


WRITERS = {
    "mask": lambda d, m, r, o: ["mask", "-d", d, "-l", "0-1", "-o", o / "m.h5", "--quiet"],
    "train": lambda d, m, r, o: ["train", m, "-o", o / "r.h5", *TINY],
    "evaluate": lambda d, m, r, o: ["evaluate", r, "--csv", o / "e.csv", *CPU],
    "sample": lambda d, m, r, o: ["sample", r, "-o", o / "s.h5", *CPU],
    "predict": lambda d, m, r, o: ["predict", r, d, "-o", o / "p.csv", *CPU],
}


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_sigint_inside_a_write_leaves_nothing(command: str, tmp_path: Path, monkeypatch,
                                              figures):
    data = write_tiny_npz(tmp_path / "d.npz")
    mask, run = tmp_path / "mask.h5", tmp_path / "run.h5"
    assert invoke(["mask", "-d", data, "-l", "0-1", "-o", mask, "--quiet"]).exit_code == 0
    assert invoke(["train", mask, "-o", run, *TINY]).exit_code == 0
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(os, "fsync", _InterruptOnFsync())
    result = invoke(WRITERS[command](data, mask, run, out))
    message = check_clean_error(result)
    assert result.exit_code == 130 and "interrupted" in message, message
    assert list(out.iterdir()) == []  # no output, no temporary, no lock file
    figures.add("interrupts")


@pytest.mark.attack_bug("after Ctrl-C in epoch 1, `susl train` said '0 finished epochs are "
                        "saved in OUT: continue with --resume' although OUT did not exist")
def test_sigint_before_the_first_checkpoint_says_nothing_was_saved(tmp_path: Path,
                                                                  monkeypatch, figures):
    data = write_tiny_npz(tmp_path / "d.npz")
    mask, run = tmp_path / "mask.h5", tmp_path / "run.h5"
    assert invoke(["mask", "-d", data, "-l", "0-1", "-o", mask, "--quiet"]).exit_code == 0

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_train_epoch", interrupted)
    result = invoke(["train", mask, "-o", run, *TINY])
    message = check_clean_error(result)
    assert result.exit_code == 130 and "before any epoch was saved" in message, message
    assert "--resume" not in message.replace("without --resume", "") and not run.exists()
    figures.add("interrupts")


def test_sigint_outside_the_command_is_reported(monkeypatch, figures):
    """Typer turns a KeyboardInterrupt raised while click parses (or just after the command)
    into a silent exit 130; susl still prints its one line (found while testing issue 19)."""
    from typer.core import TyperGroup

    def interrupted(self, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(TyperGroup, "invoke", interrupted)
    result = invoke(["info", "x.h5"])
    assert result.exit_code == 130 and result.stderr == "error: interrupted\n", result.stderr
    figures.add("interrupts")
