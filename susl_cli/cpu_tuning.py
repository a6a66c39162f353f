"""Process-wide settings for training on the CPU: an explicit opt-in the CLI makes.

`susl train` and `susl experiment` call `tune_cpu()` before training on the CPU; a Python
caller of `train.fit()` gets no process-wide side effect unless it calls it too.
"""

from __future__ import annotations

import ctypes
import sys

import torch

# glibc mallopt parameters and the values set by `keep_cpu_buffers` (see there).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 32 << 20  # the largest value glibc accepts
_TRIM_THRESHOLD_BYTES = 512 << 20

def tune_cpu_for(device: str) -> None:
    """`tune_cpu()` when `device` (a --device value) trains on the CPU; a device this machine
    lacks is left to the command to report."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        tune_cpu()


_buffers_kept = False


def tune_cpu() -> dict[str, bool]:
    """Process-wide settings for training on the CPU (idempotent); returns what is in effect.

    - flush_denormal: subnormal floats (|x| < 1.2e-38 in float32) are flushed to zero. With
      exact enumeration, the gradients of components that q(y|x) all but rules out become
      subnormal, and x86 arithmetic on subnormals is up to 100x slower: GM-DGM with d_z = 100
      slowed from ~500 to ~70 samples/s within 50 steps without this. Values that small lie
      far below the float32 resolution of every term they are added to.
    - keep_buffers: see `keep_cpu_buffers`.
    """
    return {"flush_denormal": torch.set_flush_denormal(True),
            "keep_buffers": keep_cpu_buffers()}


def keep_cpu_buffers() -> bool:
    """Stop glibc from handing freed tensor buffers back to the OS after every CPU step.

    A step allocates and frees dozens of (B*K, D) and (B*K, H) buffers of a few MB. By default
    glibc maps blocks this large freshly and trims the heap eagerly, so each step touches
    new pages: about 4,000 page faults and 8-16% of the step time (MNIST, K = 45, batch 100).
    Fixed thresholds keep the buffers in the heap for reuse. Process-wide and idempotent;
    Linux with glibc only (elsewhere a no-op). Returns whether the setting is in effect.
    """
    global _buffers_kept
    if not _buffers_kept and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            _buffers_kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
                                 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
        except (OSError, AttributeError):  # not glibc (e.g. musl): keep the defaults
            _buffers_kept = False
    return _buffers_kept
