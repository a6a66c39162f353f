"""Training one model over several processes (DDP through torchrun, gloo on the CPU): the
same trajectory as one process with the same global batch, checkpoints that record and
resume across world sizes, one-line refusals, and a dead process that ends the run cleanly.

The multi-process tests start real processes (torchrun, or tests/ddp_worker.py with the
environment torchrun sets) on free local ports; each takes a few seconds of start-up.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from susl_cli.cli import app
from susl_cli.distributed import World, check_batch_sizes, world_from_env
from susl_cli.errors import ConfigError, UsageError
from susl_cli.models.shard import rows_of
from susl_cli.runs import load_model
from susl_cli.storage.rows import MaskRows
from susl_cli.train import train_mask_file

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
TRAIN = ["--epochs", "2", "--batch-size", "20", "--labelled-batch-size", "10",
         "--extra-components", "4", "--hidden-units", "16", "--latent-dim", "2",
         "--learning-rate", "0.01", "--marginal-kl", "1", "--device", "cpu", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}


def _torchrun(args: list[str], n: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "susl_cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


def _workers(args: list[str], n: int = 2, timeout: float = 120, **extra: str) -> list:
    """Start n processes of tests/ddp_worker.py as torchrun would; (rc, output) of each."""
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(WORKER), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                                   "WORLD_SIZE": str(n), "RANK": str(r),
                                   "LOCAL_RANK": str(r), **extra})
             for r in range(n)]
    results = []
    for proc in procs:  # communicate: no pipe left open, no deadlock on a full pipe
        output, _ = proc.communicate(timeout=timeout)
        results.append((proc.returncode, output))
    return results


# -- units ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("n_rows", "world"), [(20, 2), (7, 2), (1, 2), (10, 3), (0, 2)])
def test_rows_of_splits_every_row_once_in_near_equal_contiguous_shares(n_rows, world) -> None:
    spans = [rows_of(n_rows, r, world) for r in range(world)]
    assert spans[0][0] == 0 and spans[-1][1] == n_rows
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    sizes = [stop - start for start, stop in spans]
    assert max(sizes) - min(sizes) <= 1


def test_world_from_env_reads_torchrun_and_defaults_to_one_process() -> None:
    assert not world_from_env({}).distributed
    world = world_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (world.rank, world.size, world.local_rank, world.is_main) == (2, 4, 0, False)
    assert not world_from_env({"WORLD_SIZE": "1", "RANK": "0"}).distributed
    with pytest.raises(UsageError, match="RANK 5 is not within WORLD_SIZE 2"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "5"})


def test_a_global_batch_that_does_not_split_evenly_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        check_batch_sizes(World(rank=0, size=2), 15, 10)
    assert str(err.value) == ("--batch-size 15 (the global batch) does not split evenly over "
                              "2 processes: give a multiple of 2")
    with pytest.raises(ConfigError, match="--labelled-batch-size 10 "):
        check_batch_sizes(World(rank=1, size=3), 9, 10)
    check_batch_sizes(World(rank=0, size=2), 16, 8)
    check_batch_sizes(World(), 15, 7)  # one process takes any batch


# -- several processes ----------------------------------------------------------------------

HISTORY_TERMS = ("loss", "elbo_l", "ce_l", "marginal_kl_u", "elbo_u", "recon_u", "kl_z_u",
                 "kl_y_u", "train_labelled_acc", "components_used")


def _assert_same_history(one: dict, two: dict) -> None:
    for key in HISTORY_TERMS:
        assert one[key] == pytest.approx(two[key], rel=1e-5, abs=1e-5), key


def test_two_processes_follow_the_one_process_trajectory_and_resume_in_one(
        tiny_image_mask, tmp_path, runner) -> None:
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    result = runner.invoke(app, ["train", str(tiny_image_mask), *TRAIN, "--out", str(one)])
    assert result.exit_code == 0, result.output
    done = _torchrun(["train", str(tiny_image_mask), *TRAIN, "--json", "--out", str(two)])
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)  # process 0 alone prints the summary
    assert (summary["processes"], summary["backend"]) == (2, "gloo")
    assert (summary["batch_size"], summary["batch_size_per_process"]) == (20, 10)
    assert summary["labelled_batch_size_per_process"] == 5
    run_one, run_two = load_model(one), load_model(two)
    assert run_two.epoch == 2 and run_two.meta.world_size == 2
    assert run_one.meta.world_size == 1
    _assert_same_history(run_one.history, run_two.history)
    for a, b in zip(run_one.model.parameters(), run_two.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    info = runner.invoke(app, ["info", str(two)])
    assert "2 (torchrun, DDP)" in info.output
    # a checkpoint of 2 processes continues in 1, as the 1-process checkpoint does
    for path in (one, two):
        result = runner.invoke(app, ["train", str(tiny_image_mask), "--resume", "--epochs", "3",
                                     "--quiet", "--device", "cpu", "--out", str(path)])
        assert result.exit_code == 0, result.output
    resumed_one, resumed_two = load_model(one), load_model(two)
    assert resumed_two.epoch == 3 and resumed_two.meta.world_size == 1
    _assert_same_history(resumed_one.history, resumed_two.history)


@pytest.mark.parametrize("rank", ["0", "1"])
def test_each_process_refuses_a_global_batch_that_does_not_split_in_one_line(
        tiny_image_mask, tmp_path, runner, monkeypatch, rank) -> None:
    """What each of torchrun's processes prints, before it waits for the others."""
    for key, value in {"WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "odd.h5"
    result = runner.invoke(app, ["train", str(tiny_image_mask), *TRAIN, "--batch-size", "15",
                                 "--out", str(out)])
    assert result.exit_code == 2
    assert result.output == ("error: --batch-size 15 (the global batch) does not split evenly "
                             "over 2 processes: give a multiple of 2\n")
    assert not out.exists()


@pytest.fixture(scope="module")
def workers(tiny_image_mask, tmp_path_factory) -> tuple[Path, list, float]:
    """tests/ddp_worker.py over 2 processes: (its folder, (rc, output) of each, seconds)."""
    folder = tmp_path_factory.mktemp("workers")
    start = time.monotonic()
    results = _workers([str(tiny_image_mask), str(folder), "3"], TEST_TIMEOUT="20")
    return folder, results, time.monotonic() - start


def test_sharded_objective_has_the_global_loss_and_gradient(workers) -> None:
    """Each process's loss is the global batch's; the world-size-scaled, DDP-averaged
    gradient is the one-process gradient of the whole batch, also with marginal KL, the
    merge guard, label evidence, Gumbel draws, uneven shares and a process holding no
    unlabelled row.
    (Tolerance 1e-6: one process takes log B in float32 for the marginal KL.)"""
    from tests.ddp_worker import toy_batch, toy_model

    folder, results, _ = workers
    ranks = [torch.load(folder / f"rank{r}.pt") for r in range(2)]
    for key, first in ranks[0].items():
        estimator, n_l, n_u = key.split("-")
        model = toy_model(estimator)
        out = model(toy_batch(int(n_l), int(n_u)))
        out.loss.backward()
        for found in (first, ranks[1][key]):
            torch.testing.assert_close(found["loss"], out.loss.detach(), rtol=1e-6, atol=0)
            assert list(found["terms"]) == list(out.terms)
            for name, value in out.terms.items():
                torch.testing.assert_close(found["terms"][name], value, rtol=1e-6,
                                           atol=1e-12)
            for mine, whole in zip(found["grads"], model.parameters(), strict=True):
                # the merge guard's share is sharpened (logits / 0.25, then exp): its gradient
                # carries float32 rounding of the shared batch mean up to ~2e-6 relative, and
                # where terms nearly cancel (one weight of 64, gradient ~2.5e-4) 1e-8 absolute
                torch.testing.assert_close(mine, whole.grad, rtol=1e-5, atol=1e-7)


def test_a_process_that_dies_ends_the_others_with_one_line_and_the_run_resumes(
        tiny_image_mask, workers, runner) -> None:
    folder, [(rc0, text0), (rc1, _)], seconds = workers
    out = folder / "dies.h5"
    assert rc1 == 9 and rc0 == 75, text0
    assert seconds < 90  # start-up and a few steps: no wait for a hung collective
    lines = [line for line in text0.splitlines() if line.startswith("PeerFailure")]
    assert len(lines) == 1, text0
    assert "process 0 of 2 stopped in epoch 2" in lines[0]
    assert "holds epoch 1: continue with --resume" in lines[0]
    assert load_model(out).epoch == 1
    result = runner.invoke(app, ["train", str(tiny_image_mask), "--resume", "--quiet", "--device",
                                 "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_model(out).epoch == 4


def test_each_process_streams_only_its_rows_of_each_global_batch(
        tiny_image_mask, workers, tmp_path, monkeypatch) -> None:
    """Call by call, the rows the 2 processes asked the mask file for (a streamed run in
    tests/ddp_worker.py) split the rows one process asks for (rows_of); only the labelled
    rows, held in memory, are read by both. The trajectory is the one-process one."""
    from tests.ddp_worker import STREAM_OPTIONS, STREAM_OVERRIDES, recording_reads

    folder, results, _ = workers
    calls: list[np.ndarray] = []
    monkeypatch.setattr(MaskRows, "take", recording_reads(calls))
    train_mask_file(tiny_image_mask, tmp_path / "one.h5", options=STREAM_OPTIONS,
                    train_overrides=STREAM_OVERRIDES, device="cpu", stream=True)
    ranks = []
    for r in range(2):
        with np.load(folder / f"reads{r}.npz") as saved:
            ranks.append([saved[f"arr_{i}"] for i in range(len(saved.files))])
    assert len(ranks[0]) == len(ranks[1]) == len(calls) > 2, results[0][1][-2000:]
    np.testing.assert_array_equal(ranks[0][0], calls[0])  # the labelled rows
    np.testing.assert_array_equal(ranks[1][0], calls[0])
    for whole, first, second in zip(calls[1:], ranks[0][1:], ranks[1][1:], strict=True):
        np.testing.assert_array_equal(np.concatenate([first, second]), whole)
        assert abs(len(first) - len(second)) <= 1
    one, two = load_model(tmp_path / "one.h5"), load_model(folder / "streamed.h5")
    assert two.meta.world_size == 2 and two.meta.data_path.startswith("streamed from")
    _assert_same_history(one.history, two.history)
