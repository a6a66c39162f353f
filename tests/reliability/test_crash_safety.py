"""SIGKILL `susl train` and `susl mask` at random moments; nothing on disk may be lost.

Promises tested (docs/reliability.md):
- after every kill the checkpoint on disk loads (`susl info`), and it is never older than the
  last checkpoint that had appeared before the kill: at most the epoch in flight (and, when
  the kill lands inside a checkpoint write, the epoch being written) is lost;
- `--resume` continues; a killed-and-resumed CPU run ends bitwise equal to an uninterrupted one;
- killed before its first checkpoint, `--resume` says there is nothing to resume and a fresh
  start works;
- a killed `susl mask` never leaves a half-written file under the final name; its temporary is
  named `.NAME.PID.XXXX.tmp` and removed by the next write to that name.

Real processes, real SIGKILL, timing only (no test hooks in the product). Kills land at random
moments drawn from a seeded generator ($SUSL_RELIABILITY_SEED, default 7); "inside a write"
kills fire the moment the child's temporary file appears. $SUSL_RELIABILITY_KILLS (default 3)
sets how many kills land during training.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from susl_cli.runs import _flatten_optimizer, load_model
from susl_cli.storage.masked import read_masked_dataset

from .reliability_helpers import (
    WALL_CLOCK_COLUMNS,
    check_clean_error,
    invoke,
    leftovers,
    subprocess_env,
    susl_command,
)

SEED = int(os.environ.get("SUSL_RELIABILITY_SEED", "7"))
KILLS = int(os.environ.get("SUSL_RELIABILITY_KILLS", "3"))
EPOCHS = 3 * KILLS + 2  # room for every kill to land before the run is done
# A tiny model whose epochs are short (about 0.15 s on one core) and whose checkpoint is a few
# MB (hidden 256), so checkpoint writes are frequent and long enough to be hit.
TRAIN_ARGS = ["--epochs", EPOCHS, "--batch-size", 20, "--labelled-batch-size", 10,
              "--hidden-units", 256, "--latent-dim", 2, "--extra-components", 2, "--seed", 3,
              "--device", "cpu", "--quiet", "--checkpoint-seconds", 0]  # a write per epoch
CHILD_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def crash_mask(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crash-mask")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 150)
    x = (rng.normal(0, 3, (4, 20))[y] + rng.normal(0, 1, (600, 20))).astype(np.float32)
    np.savez(folder / "data.npz", x=x, y=y, x_test=x[:80], y_test=y[:80])
    result = invoke(["mask", "-d", folder / "data.npz", "-l", "0-1", "--quiet",
                     "--out", folder / "mask.h5"])
    assert result.exit_code == 0, result.output
    return folder / "mask.h5"


@dataclass
class Watched:
    """What the parent saw of one child: when each new checkpoint appeared, and the kill."""

    pid: int
    started: float
    checkpoints: list[float] = field(default_factory=list)  # monotonic times
    killed_at: float | None = None
    temp_seen: bool = False
    returncode: int | None = None


KillRule = Callable[[Watched, float], bool]  # (state, now) -> kill now?


def watch(cmd: list[str], out: Path, env: dict[str, str], cwd: Path,
          kill_when: KillRule | None = None) -> Watched:
    """Run `cmd`, polling `out` (new inode = new checkpoint) and its folder for temporaries."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    state = Watched(pid=proc.pid, started=time.monotonic())
    temp = re.compile(rf"^\.{re.escape(out.name)}\.{proc.pid}\..*\.tmp$")
    inode = out.stat().st_ino if out.exists() else None
    try:
        while proc.poll() is None:
            now = time.monotonic()
            assert now - state.started < CHILD_TIMEOUT_S, "child ran too long"
            try:
                current = out.stat().st_ino
            except FileNotFoundError:
                current = None
            if current is not None and current != inode:
                inode = current
                state.checkpoints.append(now)
            state.temp_seen = any(temp.match(n) for n in os.listdir(out.parent))
            if kill_when is not None and kill_when(state, now):
                os.kill(proc.pid, signal.SIGKILL)
                state.killed_at = time.monotonic()
                proc.wait()
                break
            time.sleep(0.001)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate()
    state.returncode = proc.returncode
    if state.killed_at is None:
        assert proc.returncode == 0, f"child failed: {stderr.decode(errors='replace')}"
    return state


def before_first_checkpoint(delay: float) -> KillRule:
    return lambda s, now: not s.checkpoints and now - s.started >= delay


def inside_a_write(after_checkpoints: int) -> KillRule:
    """The moment the child's temporary appears; should a fast disk hide every write from the
    poller, just after its third checkpoint instead (then it counts as an ordinary kill)."""
    return lambda s, now: len(s.checkpoints) >= after_checkpoints and (
        s.temp_seen or len(s.checkpoints) >= after_checkpoints + 2)


def at_random_time(rng: random.Random, period: float, epochs_left: int) -> KillRule:
    """Uniformly within this child's training, once its first checkpoint has appeared."""
    offset = rng.uniform(0.1, 0.6) * period * max(epochs_left - 1, 1)

    def rule(s: Watched, now: float) -> bool:
        return bool(s.checkpoints) and now - s.checkpoints[0] >= offset

    return rule


def checkpoint_epoch(path: Path) -> int:
    """The checkpoint must load: `susl info --json` succeeds and names its epoch."""
    result = invoke(["info", path, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "checkpoint"
    return int(summary["epoch"])


def test_sigkill_during_training_loses_at_most_the_epoch_in_flight(
        crash_mask: Path, tmp_path: Path, figures):
    env, rng = subprocess_env(tmp_path), random.Random(SEED)
    reference = tmp_path / "reference.h5"
    # The uninterrupted run goes alongside the kills (one thread each: two cores).
    uninterrupted = subprocess.Popen(
        susl_command("train", crash_mask, "--out", reference, *TRAIN_ARGS), cwd=tmp_path,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = tmp_path / "killed.h5"
    fresh = susl_command("train", crash_mask, "--out", out, *TRAIN_ARGS)
    resume = [*fresh, "--resume"]

    # 1. Killed before any checkpoint exists: nothing to resume, a fresh start works.
    first = watch(fresh, out, env, tmp_path, before_first_checkpoint(rng.uniform(0.2, 1.5)))
    assert first.killed_at is not None and not out.exists()
    message = check_clean_error(invoke(["train", crash_mask, "--out", out, *TRAIN_ARGS,
                                        "--resume"]))
    assert "nothing to resume" in message and "without --resume" in message
    figures.add("kills")
    figures.add("kills_before_checkpoint")

    # 2. Kills during training, alternately inside a checkpoint write and at a random moment.
    command, epoch_on_disk, intervals, losses = fresh, 0, [0.25], []
    while True:
        rule = None
        if len(losses) < KILLS:
            rule = (inside_a_write(1) if len(losses) % 2 == 0 else
                    at_random_time(rng, statistics.median(intervals), EPOCHS - epoch_on_disk))
        state = watch(command, out, env, tmp_path, rule)
        intervals += list(np.diff(state.checkpoints))
        if state.killed_at is None:
            break
        seen = epoch_on_disk + len(state.checkpoints)  # checkpoints this child had shown
        epoch_on_disk = checkpoint_epoch(out)
        assert seen <= epoch_on_disk <= seen + 1  # never older than what had appeared
        losses.append(state.killed_at - (state.checkpoints or [state.started])[-1])
        left = leftovers(tmp_path, out.name)
        assert all(re.match(rf"^\.killed\.h5\.{state.pid}\.", n) for n in left), left
        figures.add("kills")
        figures.add("kills_mid_write", int(bool(left)))
        if epoch_on_disk == EPOCHS:  # killed after its last write: nothing left to do
            break
        command = resume
        figures.add("resumes")
    assert len(losses) == KILLS, f"{len(losses)} of {KILLS} kills landed: epochs too short"
    assert leftovers(tmp_path, out.name) == []  # the resumed runs removed the dead temporaries
    figures.add("stale_temporaries_removed", figures.counts["kills_mid_write"])
    # Work lost per kill: the time since the last checkpoint appeared, in typical (median)
    # checkpoint intervals, i.e. epochs. The epoch counts above already prove that nothing
    # older than the epoch in flight (or the one whose write was cut) is lost; this bound
    # only catches gross regressions while leaving room for a busy machine's slow fsync.
    period = statistics.median(intervals[1:] or intervals)
    figures.record_max("max_lost_epochs", max(losses) / period)
    assert max(losses) <= 3 * period + 0.5, (losses, period)

    # 3. Same seed on the CPU: the killed-and-resumed run equals the uninterrupted one, bitwise.
    _, stderr = uninterrupted.communicate(timeout=CHILD_TIMEOUT_S)
    assert uninterrupted.returncode == 0, stderr.decode(errors="replace")
    a, b = load_model(reference, with_optimizer=True), load_model(out, with_optimizer=True)
    assert a.epoch == b.epoch == EPOCHS and b.meta.completed
    for key, value in a.model.state_dict().items():
        assert np.array_equal(value.numpy(), b.model.state_dict()[key].numpy()), key
    flat_a, flat_b = _flatten_optimizer(a.optimizer), _flatten_optimizer(b.optimizer)
    assert flat_a.keys() == flat_b.keys()
    assert all(np.array_equal(flat_a[k], flat_b[k]) for k in flat_a)
    assert set(a.history) == set(b.history)
    for column in set(a.history) - WALL_CLOCK_COLUMNS:
        assert a.history[column] == b.history[column], column
    figures.add("bitwise_equal_runs")


@pytest.fixture(scope="module")
def big_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Large enough (20000 x 64) that writing its mask takes a noticeable moment."""
    path = tmp_path_factory.mktemp("big") / "big.npz"
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 5000)
    x = (rng.normal(size=(20000, 64)) + y[:, None]).astype(np.float32)
    np.savez(path, x=x, y=y, x_test=x[:400], y_test=y[:400])
    return path


def test_sigkill_during_mask_never_leaves_a_half_written_file(big_npz: Path, tmp_path: Path,
                                                               figures):
    env, rng = subprocess_env(tmp_path), random.Random(SEED + 1)
    out = tmp_path / "mask out é.h5"  # spaces and unicode on the way too
    args = ["mask", "-d", big_npz, "-l", "0-1", "--seed", 5, "--quiet", "--out", out]
    rules = [lambda s, now: s.temp_seen]  # inside the write
    rules += [lambda s, now, t=rng.uniform(1.0, 4.0): now - s.started >= t  # at random
              for _ in range(max(KILLS - 3, 0))]
    dead_pids = []
    for rule in rules:
        state = watch(susl_command(*args), out, env, tmp_path, rule)
        if state.killed_at is None:  # finished first: the file must be whole
            out.unlink()
            continue
        figures.add("mask_kills")
        dead_pids.append(state.pid)
        assert not out.exists() or invoke(["info", out]).exit_code == 0
        out.unlink(missing_ok=True)
        left = leftovers(tmp_path, out.name)
        assert all(any(f".{pid}." in n for pid in dead_pids) for n in left), left
    assert figures.counts["mask_kills"] >= 1
    stale = leftovers(tmp_path, out.name)
    result = invoke(args)  # the next write succeeds and clears the dead temporaries
    assert result.exit_code == 0, result.output
    assert leftovers(tmp_path, out.name) == []
    figures.add("stale_temporaries_removed", len(stale))
    masked = read_masked_dataset(out, with_true_labels=True)  # whole: every array intact
    with np.load(big_npz) as source:
        assert np.array_equal(masked.x_train, source["x"])
        assert np.array_equal(masked.y_train_true, source["y"])
        assert np.array_equal(masked.x_test, source["x_test"])
