"""Shared by the reliability tests: running the CLI, the one-line error contract, damaged and
hostile files, and pickle payloads that would leave a marker file if ever unpickled."""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from susl_cli.cli import app

REPO_ROOT = Path(__file__).resolve().parents[2]
INTERNAL_ERROR_EXIT = 70
# Columns of a training history that measure wall-clock time, not the computation.
WALL_CLOCK_COLUMNS = frozenset({"seconds", "samples_per_s"})


def invoke(args: list[str]):
    """Run `susl ARGS` in-process (stderr kept apart from stdout)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def commands() -> set[str]:
    """Names of the commands registered on the app (sample/predict join when they exist)."""
    return {c.name or c.callback.__name__ for c in app.registered_commands}


def check_clean_outcome(result, *, allow_success: bool = True) -> str:
    """The CLI contract: exit 0, or a non-zero exit with exactly one stderr line 'error: ...'.

    Never a traceback, never the 'internal error' exit (a bug caught by the last line of
    defence). Returns "ok" or "error".
    """
    detail = f"exit {result.exit_code}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert "Traceback" not in result.stdout + result.stderr, detail
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {detail}")
    if result.exit_code == 0:
        assert allow_success, f"expected an error\n{detail}"
        return "ok"
    assert result.exit_code != INTERNAL_ERROR_EXIT, detail
    assert result.stderr.startswith("error: "), detail
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, detail
    return "error"


def check_clean_error(result) -> str:
    check_clean_outcome(result, allow_success=False)
    return result.stderr


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder: Path, name: str) -> list[str]:
    """Temporary files beside `folder/name` (an atomic write's `.NAME.*.tmp`)."""
    return sorted(p.name for p in Path(folder).iterdir()
                  if p.name.startswith(f".{name}.") and p.name.endswith(".tmp"))


def write_tiny_npz(path: Path, n_per_class: int = 30, n_classes: int = 4, dim: int = 8,
                   seed: int = 0) -> Path:
    """Well separated real-valued classes with a test split: a valid user data file."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = (rng.normal(0, 3, (n_classes, dim))[y] + rng.normal(0, 0.5, (len(y), dim)))
    test = np.arange(len(y)) % 5 == 0
    np.savez(path, x=x[~test].astype(np.float32), y=y[~test], x_test=x[test].astype(np.float32),
             y_test=y[test])
    return path


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """Environment for `python -m susl_cli` children: this checkout, one thread, own cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SUSL_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("SUSL_DEBUG", None)
    return env


def susl_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "susl_cli", *map(str, args)]


# --- damage --------------------------------------------------------------------------------------

def truncations(data: bytes) -> dict[str, bytes]:
    """Cuts a copy or download that stopped early would leave."""
    cuts = {"empty": 0, "first-8-bytes": 8, "quarter": len(data) // 4, "half": len(data) // 2,
            "90-percent": len(data) * 9 // 10, "minus-1-byte": len(data) - 1}
    return {f"truncated-{name}": data[:n] for name, n in cuts.items()}


def bit_flips(data: bytes, n: int, seed: int) -> dict[str, bytes]:
    """`n` copies of `data`, each with one bit flipped at a seeded position (spread evenly)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        lo, hi = i * len(data) // n, max((i + 1) * len(data) // n, i * len(data) // n + 1)
        offset = int(rng.integers(lo, hi))
        bit = int(rng.integers(0, 8))
        flipped = bytearray(data)
        flipped[offset] ^= 1 << bit
        out[f"bitflip-{offset}.{bit}"] = bytes(flipped)
    return out


PNG_BYTES = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
             b"\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00"
             b"\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


# --- pickle payloads -----------------------------------------------------------------------------

class MarkerPayload:
    """Unpickling this object calls open(marker, "a"): the marker file proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "a"))


def pickle_payload(marker: Path) -> bytes:
    return pickle.dumps(MarkerPayload(marker))


def object_array_npz(path: Path, marker: Path) -> Path:
    """An .npz whose x is an object array: numpy pickles it, np.load(allow_pickle=True) runs it."""
    x = np.empty(3, dtype=object)
    x[:] = [MarkerPayload(marker)] * 3
    np.savez(path, x=x, y=np.arange(3))
    return path


def torch_checkpoint(path: Path, marker: Path) -> Path:
    """A PyTorch checkpoint (zip + pickle) that torch.load(weights_only=False) would execute."""
    import torch

    torch.save({"state_dict": {}, "payload": MarkerPayload(marker)}, path)
    return path
