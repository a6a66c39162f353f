"""One process of a distributed test run, started by tests/test_distributed.py with the
environment torchrun would set (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

    python tests/ddp_worker.py MASK OUT_DIR STEP

First the sharded objective's loss and gradient on toy batches (saved to
OUT_DIR/rank<r>.pt), then a streamed training run to OUT_DIR/streamed.h5 (the file rows each
process asked the mask for, call by call, saved to OUT_DIR/reads<r>.npz), then a training run
to OUT_DIR/dies.h5 in which process 1 dies at step STEP of epoch 2; the survivor prints its
one-line PeerFailure and exits 75. One launch for all: every process start costs seconds of
imports.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from susl_cli.config import ModelConfig, NetworkSettings, ObjectiveConfig
from susl_cli.distributed import PeerFailure, join, leave, world_from_env, wrap
from susl_cli.models import Batch, GuardState, build_model
from susl_cli.runs import ModelOptions
from susl_cli.storage.rows import MaskRows
from susl_cli.train import train_mask_file
from susl_cli.training_data import shard_batch

K, D = 4, 10
STREAM_OPTIONS = ModelOptions(extra_components=4, settings={"hidden_units": 16,
                                                            "latent_dim": 2})
# label evidence off: every process reads all rows once for it before training, and these runs
# check which rows each process reads per batch (the streamed evidence equals the in-memory
# one: tests/test_training_data.py)
STREAM_OVERRIDES = {"epochs": 2, "batch_size": 20, "labelled_batch_size": 10,
                    "learning_rate": 0.01, "seed": 0, "marginal_kl": 1.0,
                    "label_evidence": 0.0}


def toy_model(estimator: str) -> torch.nn.Module:
    config = ModelConfig(model="gmdgm", input_dim=D, n_components=K, n_labelled=2,
                         prior=(0.4, 0.3, 0.2, 0.1),
                         settings=NetworkSettings(latent_dim=3, hidden_units=16))
    model = build_model(config, ObjectiveConfig(y_estimator=estimator, marginal_kl=0.7,
                                                labelled_share_cap=1.1, label_evidence=2.0))
    torch.manual_seed(0)
    model.reset_parameters()
    for p in model.parameters():  # off the near-zero initial heads
        p.data.add_(0.3 * torch.randn_like(p))
    return model.double()


def toy_batch(n_labelled: int, n_unlabelled: int) -> Batch:
    rng = torch.Generator().manual_seed(1)
    x_l = torch.rand(n_labelled, D, generator=rng, dtype=torch.float64)
    y_l = torch.arange(n_labelled) % 2
    x_u = torch.rand(n_unlabelled, D, generator=rng, dtype=torch.float64)
    guard = GuardState(torch.tensor([2.0, 0.0], dtype=torch.float64),
                       torch.tensor([0.05, 0.1], dtype=torch.float64))
    evidence = torch.rand(n_unlabelled, generator=rng, dtype=torch.float64)  # P(new)
    return Batch(x_l, y_l, x_u, torch.Generator().manual_seed(3), guard,
                 evidence_unlabelled=evidence)


def gradients(world, out_dir: Path) -> None:
    """Loss and world-size-scaled, DDP-averaged gradient of this process's shard, for
    uneven splits (5 labelled rows: 3 + 2) and an empty share (1 unlabelled row: 1 + 0)."""
    found = {}
    for estimator in ("enumerate", "gumbel"):
        for n_l, n_u in ((5, 7), (4, 1)):
            model = toy_model(estimator)
            net = wrap(model, world)
            out = net(shard_batch(toy_batch(n_l, n_u), world.rank, world.size))
            (out.loss * world.size).backward()
            found[f"{estimator}-{n_l}-{n_u}"] = {
                "loss": out.loss.detach(), "terms": out.terms,
                "grads": [p.grad.clone() for p in model.parameters()]}
    torch.save(found, out_dir / f"rank{world.rank}.pt")


def recording_reads(calls: list[np.ndarray]):
    """MaskRows.take that also records the rows asked for (install with setattr)."""
    take = MaskRows.take

    def recorded(self: MaskRows, rows: np.ndarray) -> np.ndarray:
        calls.append(np.array(rows, dtype=np.int64))
        return take(self, rows)

    return recorded


def streamed(world, mask: Path, out_dir: Path) -> None:
    """Train with the unlabelled rows streamed; save the rows this process read, per call."""
    calls: list[np.ndarray] = []
    take = MaskRows.take
    MaskRows.take = recording_reads(calls)  # type: ignore[method-assign]
    try:
        train_mask_file(mask, out_dir / "streamed.h5", options=STREAM_OPTIONS,
                        train_overrides=STREAM_OVERRIDES, device="cpu", world=world,
                        stream=True)
    finally:
        MaskRows.take = take  # type: ignore[method-assign]
    np.savez(out_dir / f"reads{world.rank}.npz", *calls)


class DieAt:
    """An observer that ends process 1 abruptly (no cleanup) at step `step` of epoch 2."""

    def __init__(self, step: int) -> None:
        self.step, self.epoch, self.done = step, 0, 0

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch, self.done = epoch, 0

    def steps_done(self, n: int) -> None:
        self.done += n
        if self.epoch == 2 and self.done == self.step:
            os._exit(9)

    def running_loss(self, loss: float) -> None:
        pass

    def epoch_finished(self, record: dict[str, float]) -> None:
        pass


def main(mask: Path, out_dir: Path, step: int) -> None:
    world = join(world_from_env(timeout_s=float(os.environ.get("TEST_TIMEOUT", "20"))),
                 torch.device("cpu"))
    try:
        gradients(world, out_dir)
        streamed(world, mask, out_dir)
        options = ModelOptions(extra_components=2, settings={"hidden_units": 16,
                                                             "latent_dim": 2})
        train_mask_file(mask, out_dir / "dies.h5", options=options, train_overrides={
            "epochs": 4, "batch_size": 16, "labelled_batch_size": 8, "seed": 1,
            "checkpoint_seconds": 0.0}, device="cpu",
            observer=DieAt(step) if world.rank == 1 else None, world=world)
    except PeerFailure as err:
        print(f"PeerFailure: {err}", flush=True)
        sys.exit(75)
    finally:
        leave(world)
    print("finished", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
    assert not dist.is_initialized()
