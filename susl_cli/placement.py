"""Where the experiment grid's parallel runs go: one device per worker slot.

The rule (`susl experiment --help` states it too): with `--device cuda`, or `auto` on a
machine with CUDA, and G visible GPUs, worker slot s (0 .. jobs-1) trains on `cuda:{s % G}`.
A slot is one worker process, which keeps its GPU for its whole life, so however long each
run takes, every GPU holds floor(jobs/G) or ceil(jobs/G) of the runs in flight and each
process opens one CUDA context. `--jobs` defaults to G there (one process per GPU); a larger
`--jobs` shares the GPUs round-robin. `--device cuda:N` pins every slot to GPU N, and `cpu`
(or `auto` without CUDA) puts every slot on the CPU, one job by default.

Library layer: no CLI imports, prints nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from susl_cli.errors import DeviceError
from susl_cli.runs import resolve_device


def _spread_over_gpus(device: str) -> bool:
    """True for `cuda` or `auto` resolving to CUDA (no GPU index given): slots get GPUs."""
    used = resolve_device(device)  # a CUDA request without CUDA fails here, in one line
    return used.type == "cuda" and used.index is None


def _gpu_count() -> int:
    count = torch.cuda.device_count()
    if count < 1:
        raise DeviceError("CUDA is available but no GPU is visible (CUDA_VISIBLE_DEVICES?): "
                          "use --device cpu, or make a GPU visible")
    return count


def default_jobs(device: str) -> int:
    """Worker processes when --jobs is not given: one per visible GPU on CUDA, else 1."""
    return _gpu_count() if _spread_over_gpus(device) else 1


def slot_devices(device: str, jobs: int) -> tuple[str, ...]:
    """The device of each of `jobs` worker slots: slot s -> cuda:{s % G} when spreading."""
    if _spread_over_gpus(device):
        gpus = _gpu_count()
        return tuple(f"cuda:{slot % gpus}" for slot in range(jobs))
    return (str(resolve_device(device)),) * jobs


def describe_placement(slots: Sequence[str]) -> str:
    """'2 x NVIDIA H200, 4 jobs (2 per GPU)' for CUDA slots; '2 jobs on the CPU' otherwise."""
    jobs = f"{len(slots)} job{'s' if len(slots) != 1 else ''}"
    per_gpu = Counter(s for s in slots if s.startswith("cuda"))
    if not per_gpu:
        return f"{jobs} on the CPU"
    names = Counter(torch.cuda.get_device_name(torch.device(gpu)) for gpu in sorted(per_gpu))
    gpus = " + ".join(f"{n} x {name}" for name, n in names.items())
    low, high = min(per_gpu.values()), max(per_gpu.values())
    share = f"{low}" if low == high else f"{low}-{high}"
    return f"{gpus}, {jobs} ({share} per GPU)"


__all__ = ["default_jobs", "describe_placement", "slot_devices"]
