"""Training one model over several processes: torchrun's environment, the process group,
DistributedDataParallel, and the collectives the trainer needs.

`torchrun --nproc_per_node N -m susl_cli train ...` starts N copies of the command with
WORLD_SIZE, RANK and LOCAL_RANK set; `world_from_env` reads them (WORLD_SIZE 1 or unset: one
ordinary process). Every process loads the whole mask file (or, streamed, reads only its
own rows of each batch: training_data.py), draws the same global batches and trains on its
slice of each (models/shard.py); DDP keeps the weights equal. Process 0
(the main one) draws the progress bar, writes the checkpoint and the history CSV; the
others wait at a barrier. Backend: nccl on CUDA (one GPU per process, cuda:LOCAL_RANK),
gloo on the CPU. Every collective has a timeout, so a process whose peer died stops with
one line instead of hanging.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from susl_cli.errors import ConfigError, DeviceError, SuslError, UsageError

DEFAULT_TIMEOUT_S = 300.0  # a collective waits this long for the other processes


class PeerFailure(SuslError):
    """Another process of a distributed run stopped (or stopped answering)."""

    exit_code = 75  # EX_TEMPFAIL: resume once the cause is gone

    def __init__(self, message: str) -> None:
        super().__init__(message)
        if dist.is_available() and dist.is_initialized():
            _skip_teardown()


# gloo cannot tear down a group whose peer vanished: destroying it, or letting Python free it
# at exit, now and then ends in std::terminate ("terminate called without an active
# exception", SIGABRT: exit -6 instead of 75, seen in the suite under load). Once a peer is
# lost, leave() keeps the group and the process ends without native teardown.
_peer_lost = False


def _skip_teardown() -> None:
    global _peer_lost
    if not _peer_lost:
        _peer_lost = True
        atexit.register(_exit_without_teardown)


def _exit_without_teardown() -> None:
    """Last at exit (registered late, atexit runs in reverse): the message is out and the
    checkpoint is whole (atomic writer), so only the broken group's teardown is skipped."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(PeerFailure.exit_code)


@dataclass(frozen=True)
class World:
    """This process's place among the processes training one model."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    backend: str | None = None  # set once the process group is joined

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"process {self.rank} of {self.size}"


SINGLE = World()


def world_from_env(environ: Mapping[str, str] | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> World:
    """The World torchrun describes in the environment; one process when it describes none."""
    env = os.environ if environ is None else environ
    if not timeout_s > 0:
        raise UsageError(f"--dist-timeout must be > 0 seconds, got {timeout_s:g}")
    if "WORLD_SIZE" not in env:
        return World(timeout_s=timeout_s)
    try:
        size, rank = int(env["WORLD_SIZE"]), int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UsageError("WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers (torchrun sets "
                         "them): start distributed runs with torchrun") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise UsageError(f"RANK {rank} is not within WORLD_SIZE {size}: start distributed "
                         "runs with torchrun")
    return World(rank=rank, size=size, local_rank=local, timeout_s=timeout_s)


def training_device(world: World, resolved: torch.device, asked: str) -> torch.device:
    """One GPU per process (cuda:LOCAL_RANK) under torchrun; a fixed cuda:N is refused there."""
    if not world.distributed or resolved.type != "cuda":
        return resolved
    if asked not in ("auto", "cuda"):
        raise DeviceError(f"--device {asked} would put every process on one GPU: under "
                          "torchrun use --device cuda (process i uses GPU LOCAL_RANK i)")
    if world.local_rank >= torch.cuda.device_count():
        raise DeviceError(f"process {world.rank} has LOCAL_RANK {world.local_rank} but this "
                          f"machine has {torch.cuda.device_count()} GPUs: start at most that "
                          "many processes per node")
    return torch.device("cuda", world.local_rank)


def join(world: World, device: torch.device) -> World:
    """Join the process group (nccl on CUDA, gloo on the CPU); a no-op for one process."""
    if not world.distributed:
        return world
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=world.timeout_s))
    except (RuntimeError, ValueError) as err:
        raise PeerFailure(f"{world.describe()} could not reach the others within "
                          f"{world.timeout_s:g} s ({_short(err)}): start all processes with "
                          "torchrun") from None
    _stop_on_sigterm()
    return World(world.rank, world.size, world.local_rank, world.timeout_s, backend)


def leave(world: World) -> None:
    """Leave the process group. The run's outcome is said by now: a late SIGTERM from
    torchrun (stopping the others) must not add a traceback while Python shuts down."""
    if world.distributed and dist.is_initialized():
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not _peer_lost:  # a broken group is left to the exit (_skip_teardown)
            dist.destroy_process_group()


def _stop_on_sigterm() -> None:
    """torchrun stops the remaining processes with SIGTERM when one fails: end with one line
    (the atomic writer leaves the checkpoint whole) instead of dying without a word."""
    def handler(signum: int, frame: object) -> None:
        raise PeerFailure("stopped by torchrun (SIGTERM), usually because another process of "
                          "the run failed: see its message")
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: keep the default
        pass


def wrap(model: nn.Module, world: World) -> nn.Module:
    """DDP around `model` (its forward is model(batch)); the model itself for one process.

    forward_sync_buffers=False: the only buffer, log p(y), never changes during training.
    """
    if not world.distributed:
        return model
    device = next(model.parameters()).device
    ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


def check_batch_sizes(world: World, batch_size: int | None,
                      labelled_batch_size: int | None) -> None:
    """The global batch must split evenly over the processes (each takes global / N rows);
    None: not chosen yet (the CLI checks the user's values before joining the others)."""
    if not world.distributed:
        return
    for flag, size in (("--batch-size", batch_size),
                       ("--labelled-batch-size", labelled_batch_size)):
        if size is not None and size % world.size:
            raise ConfigError(f"{flag} {size} (the global batch) does not split evenly over "
                              f"{world.size} processes: give a multiple of {world.size}")


def agree(world: World, ok: bool) -> None:
    """Every process says whether its checks passed; one that failed raised its own error,
    the others stop here with one line instead of waiting for it at the next collective."""
    if not world.distributed:
        return
    flags = torch.tensor([0 if ok else 1], dtype=torch.int64,
                         device=_collective_device(world))
    collective(world, lambda: dist.all_reduce(flags))
    if ok and int(flags.item()):
        raise PeerFailure(f"{world.describe()}: another process of this run refused to start; "
                          "see its message")


def barrier(world: World) -> None:
    if world.distributed:
        collective(world, lambda: dist.barrier())


def collective(world: World, call) -> None:
    """Run a collective; a peer that died or timed out becomes one PeerFailure line."""
    try:
        call()
    except (RuntimeError, dist.DistError) as err:
        raise PeerFailure(f"{world.describe()}: {peer_lost_text(world, err)}") from None


def is_peer_failure(err: BaseException) -> bool:
    """Whether a step's exception came from a collective (a peer gone or too slow)."""
    if isinstance(err, dist.DistError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout",
                                  "broken pipe", "peer"))


def peer_lost_text(world: World, err: BaseException) -> str:
    return (f"another process stopped or did not answer within {world.timeout_s:g} s "
            f"({_short(err)})")


def _collective_device(world: World) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if world.backend == "nccl" \
        else torch.device("cpu")


def _short(err: BaseException) -> str:
    text = re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", str(err))  # C++ source locations
    return " ".join(text.split())[:120]
