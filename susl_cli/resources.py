"""What this machine can hold: size checks made before anything big is allocated.

A 1 KB file can declare a 40 GB array and `--hidden-units 10000000` asks for a model of 10^14
weights; left alone, either makes the allocator fail deep inside numpy, h5py or torch, or worse,
succeed and then swap the machine to a halt. These helpers compare the size an operation will
need with the memory actually available (free RAM, the container's cgroup limit and the
process's ulimits), so the caller can refuse at once with one sentence that names the numbers.

Estimates are deliberately lower bounds: they only refuse what certainly cannot fit.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any

from susl_cli.errors import ConfigError

BYTES_PER_FLOAT = 4
ADAM_COPIES = 4  # weights, gradients and Adam's two moment estimates
PRIOR_BYTES_PER_COMPONENT = 64  # a Python float in the config's prior tuple, and its log


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (powers of 1024, as memory is counted)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.4g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def available_memory() -> int | None:
    """Bytes this process can still allocate on the CPU, or None when the OS does not say."""
    candidates = [_meminfo_available(), _cgroup_available(), _rlimit_available()]
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    """Room left under a cgroup v2 memory limit (containers, CI runners).

    Page cache counts towards the cgroup's usage but is given back on demand: not "used".
    """
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int((root / "memory.current").read_text().strip())
        stat = dict(line.split() for line in (root / "memory.stat").read_text().splitlines()
                    if len(line.split()) == 2)
        used -= int(stat.get("file", 0))
        return max(int(limit) - used, 0)
    except (OSError, ValueError):
        return None


def _rlimit_available() -> int | None:
    """Room left under `ulimit -v` (address space) or `ulimit -d` (data segment)."""
    room = []
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
        in_use = pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        in_use = 0
    for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft, _ = resource.getrlimit(which)
        if soft != resource.RLIM_INFINITY:
            room.append(max(soft - in_use, 0))
    return min(room) if room else None


def exceeds_memory(n_bytes: int) -> int | None:
    """The available bytes when `n_bytes` cannot fit, else None (also when nothing is known)."""
    available = available_memory()
    if available is not None and n_bytes > available:
        return available
    return None


def model_footprint(config: Any, *, training: bool, batch_rows: int = 0) -> tuple[int, int]:
    """(parameter count, lower bound on bytes) for a model described by a ModelConfig.

    The model is built on torch's "meta" device, which records shapes without allocating, so
    even an absurd configuration is measured instantly. Training needs ADAM_COPIES copies of
    the parameters, plus (with exact enumeration) the (batch, K, hidden) activations of the
    decoder's two hidden layers.
    """
    import torch

    from susl_cli.models import build_model

    with torch.device("meta"):
        model = build_model(config)
    n_params = sum(p.numel() for p in model.parameters())
    n_buffers = sum(b.numel() for b in model.buffers())
    n_bytes = (n_params * (ADAM_COPIES if training else 1) + n_buffers) * BYTES_PER_FLOAT
    if training:
        n_bytes += 2 * batch_rows * config.n_components * config.hidden_units * BYTES_PER_FLOAT
    return n_params, n_bytes


def device_memory(device: Any) -> int | None:
    """Free bytes on `device` (a torch.device): CUDA asks the driver, the CPU asks the OS."""
    if getattr(device, "type", str(device).split(":")[0]) == "cuda":
        import torch

        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):  # pragma: no cover  driver trouble
            return None
    return available_memory()


def check_model_fits(config: Any, device: Any, *, training: bool, batch_rows: int = 0,
                     source: str | None = None) -> None:
    """Refuse, before allocating, a model that cannot fit in memory (ConfigError).

    `source` names the checkpoint that described the model (loading) or is None (training a
    new model from command-line options). The model is always built on the CPU first.
    """
    try:
        n_params, weights = model_footprint(config, training=False)
        _, need = model_footprint(config, training=training, batch_rows=batch_rows)
    except (RuntimeError, TypeError, ValueError, OverflowError):  # sizes beyond int64
        raise ConfigError(_too_big(source, "sizes too large to represent", config)) from None
    for where, n_bytes in (("cpu", weights), (device, need)):
        available = device_memory(where)
        if available is not None and n_bytes > available:
            raise ConfigError(_too_big(
                source, f"{n_params:,} parameters, at least {format_bytes(n_bytes)} of memory "
                f"while {format_bytes(available)} is free on {getattr(where, 'type', where)}",
                config))


def _too_big(source: str | None, what: str, config: Any) -> str:
    if source is not None:
        return (f"{source!r} describes a model too big for this machine ({what}; hidden units "
                f"{config.hidden_units}, components {config.n_components}): the file is corrupt, "
                "or load it on a machine with more memory")
    return (f"this model does not fit in memory ({what}): lower --hidden-units (now "
            f"{config.hidden_units}), --latent-dim, --extra-components or --batch-size")


def check_components_fit(n_components: int, hidden_units: int) -> None:
    """Refuse a number of components K whose configuration alone would exhaust memory.

    Runs before the prior p(y) (K floats) is built; each component also brings a column of
    `hidden_units` weights (times ADAM_COPIES) in every layer that takes the label.
    """
    per_component = PRIOR_BYTES_PER_COMPONENT + ADAM_COPIES * BYTES_PER_FLOAT * hidden_units
    n_bytes = n_components * per_component
    available = exceeds_memory(n_bytes)
    if available is not None:
        raise ConfigError(
            f"this model does not fit in memory ({n_components:,} components need at least "
            f"{format_bytes(n_bytes)} while {format_bytes(available)} is free): lower "
            f"--extra-components or --hidden-units (now {hidden_units})"
        )
