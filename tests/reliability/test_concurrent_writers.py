"""Two susl processes never write one output: the second is refused, naming the first.

Every command that writes takes an advisory lock (`fcntl.flock`) on `.NAME.lock` beside its
output for as long as it runs; the lock file is removed when it ends, and a lock file left
by a killed process (its lock died with it) does not block the next writer.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from susl_cli.storage.files import lock_path
from susl_cli.training_log import history_csv_path

from .reliability_helpers import (
    check_clean_error,
    invoke,
    subprocess_env,
    susl_command,
    write_tiny_npz,
)

CPU = ["--device", "cpu"]
TINY = ["--hidden-units", 8, "--latent-dim", 2, "--extra-components", 2, "--quiet", *CPU]
HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    data = write_tiny_npz(tmp_path / "d.npz")
    mask, run = tmp_path / "mask.h5", tmp_path / "run.h5"
    assert invoke(["mask", "-d", data, "-l", "0-1", "-o", mask, "--quiet"]).exit_code == 0
    assert invoke(["train", mask, "-o", run, "--epochs", 1, *TINY]).exit_code == 0
    return {"data": data, "mask": mask, "run": run, "folder": tmp_path}


WRITERS = {
    "mask": lambda f, o: ["mask", "-d", f["data"], "-l", "0-1", "-o", o, "--quiet"],
    "train": lambda f, o: ["train", f["mask"], "-o", o, "--epochs", 1, *TINY],
    "train --resume": lambda f, o: ["train", f["mask"], "-o", o, "--resume", "--epochs", 2,
                                    *TINY],
    "evaluate --csv": lambda f, o: ["evaluate", f["run"], "--csv", o, *CPU],
    "sample": lambda f, o: ["sample", f["run"], "-o", o, *CPU],
    "predict": lambda f, o: ["predict", f["run"], f["data"], "-o", o, *CPU],
    "report": lambda f, o: ["report", f["run"], "-o", o, "--quiet", *CPU],
}
SUFFIX = {"evaluate --csv": ".csv", "sample": ".csv", "predict": ".csv", "report": ".html"}


def test_every_writer_respects_another_process_lock(files: dict[str, Path], figures):
    for name, args in WRITERS.items():
        out = files["folder"] / f"out-{name.split()[0]}{SUFFIX.get(name, '.h5')}"
        if name == "train --resume":
            out.write_bytes(files["run"].read_bytes())
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path(out))],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "locked"
            before = out.read_bytes() if out.exists() else None
            message = check_clean_error(invoke([*args(files, out), "--overwrite"]
                                               if name != "train --resume" else args(files, out)))
            assert "being written by another susl process" in message, (name, message)
            assert f"pid {holder.pid}" in message, message
            assert (out.read_bytes() if out.exists() else None) == before
            figures.add("concurrent_writers")
        finally:
            holder.kill()
            holder.wait()
            holder.stdout.close()
        # the holder died: its lock went with it, the lock file it left blocks nobody
        result = invoke([*args(files, out), "--overwrite"] if name != "train --resume"
                        else args(files, out))
        assert result.exit_code == 0, (name, result.output)
        assert not lock_path(out).exists()


def test_train_locks_its_training_log(files: dict[str, Path], figures):
    """Another process writing r.history.csv: `train -o r.h5` is refused before any work."""
    out = files["folder"] / "r.h5"
    lock = lock_path(history_csv_path(out))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        message = check_clean_error(invoke(["train", files["mask"], "-o", out, "--epochs", 1,
                                            *TINY]))
        assert f"being written by another susl process (pid {holder.pid})" in message, message
        assert not out.exists() and not history_csv_path(out).exists()
        figures.add("concurrent_writers")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


@pytest.mark.attack_bug("`susl train m.h5 --seed 3 -o r.h5 & susl train m.h5 --seed 4 -o r.h5`: "
                        "both exited 0 and r.h5 held seed 4")
def test_two_trainings_into_one_checkpoint(files: dict[str, Path], figures):
    out = files["folder"] / "r.h5"
    env = subprocess_env(files["folder"])
    first = subprocess.Popen(susl_command("train", files["mask"], "-o", out, "--seed", 3,
                                          "--epochs", 100000, "--checkpoint-seconds", 1, *TINY),
                             env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not out.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the first checkpoint: the first run is well under way
        assert out.exists() and first.poll() is None
        second = subprocess.run(susl_command("train", files["mask"], "-o", out, "--seed", 4,
                                             "--epochs", 1, "--overwrite", *TINY),
                                env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith("error: ") and second.stderr.count("\n") == 1
        assert f"another susl process (pid {first.pid})" in second.stderr
        figures.add("concurrent_writers")
    finally:
        first.terminate()
        first.wait(timeout=60)
        first.stderr.close()
    result = invoke(["info", out, "--json"])
    assert result.exit_code == 0 and '"seed": 3' in result.stdout
