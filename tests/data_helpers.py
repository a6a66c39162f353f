"""Shared test helpers: tiny synthetic data files, `susl mask` on them, a local HTTP server,
and the CLI's success and one-line-failure contracts."""

from __future__ import annotations

import contextlib
import functools
import gzip
import struct
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from typer.testing import CliRunner, Result  # typer >= 0.24 vendors click: never import it

HAR_CHANNELS = (
    "body_acc_x", "body_acc_y", "body_acc_z", "body_gyro_x", "body_gyro_y", "body_gyro_z",
    "total_acc_x", "total_acc_y", "total_acc_z",
)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dims, data."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_har_folder(root: Path, n_train: int = 12, n_test: int = 6, features: bool = False,
                     seed: int = 0) -> Path:
    """The official UCI HAR layout under root/uci-har/UCI HAR Dataset, with tiny random data."""
    rng = np.random.default_rng(seed)
    base = root / "uci-har" / "UCI HAR Dataset"
    for split, n in (("train", n_train), ("test", n_test)):
        signals = base / split / "Inertial Signals"
        signals.mkdir(parents=True, exist_ok=True)
        for channel in HAR_CHANNELS:
            np.savetxt(signals / f"{channel}_{split}.txt", rng.normal(size=(n, 128)), fmt="%.7e")
        labels = np.arange(n) % 6 + 1  # 1-based, every class present
        np.savetxt(base / split / f"y_{split}.txt", labels, fmt="%d")
        if features:
            np.savetxt(base / split / f"X_{split}.txt", rng.normal(size=(n, 561)), fmt="%.7e")
    return root


def write_npz(path: Path, n: int = 60, n_classes: int = 3, seed: int = 0, **extra) -> Path:
    """Small user npz: x (n, 4) real-valued, y cycling through 0..n_classes-1."""
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.normal(size=(n, 4)), "y": np.arange(n) % n_classes}
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def write_tiny_npz(path: Path, image: bool, seed: int = 0) -> Path:
    """Four well-separated classes, 50 training and 10 test points each.

    image=True: (N, 6, 6) values in [0, 1] (an "image" dataset, Bernoulli likelihood);
    image=False: (N, 12) real values (Gaussian likelihood).
    """
    rng = np.random.default_rng(seed)
    shape = (6, 6) if image else (12,)
    dim = int(np.prod(shape))
    # Nearly binary image centres: knowing the class saves many nats of reconstruction, so the
    # latent code (and a component per class) is worth using even in a 3-epoch run.
    centres = (np.where(rng.random((4, dim)) < 0.5, 0.05, 0.95) if image
               else rng.normal(0, 3, (4, dim)))
    y = np.repeat(np.arange(4), 60)
    noise = rng.normal(0, 0.05 if image else 0.5, (len(y), dim))
    x = centres[y] + noise
    if image:
        x = np.clip(x, 0, 1)
    x = x.reshape(len(y), *shape).astype(np.float32)
    test = np.arange(len(y)) % 6 == 0
    np.savez(path, x=x[~test], y=y[~test], x_test=x[test], y_test=y[test])
    return path


def write_blob_npz(path: Path, per_class: int = 30, n_test: int = 20) -> Path:
    """Four classes of flat 30-d points in [0, 1] around uniform centres; the test set is the
    first n_test training points."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(0.1, 0.9, size=(4, 30))
    y = np.repeat(np.arange(4), per_class)
    x = np.clip(centres[y] + rng.normal(0, 0.05, (len(y), 30)), 0, 1).astype(np.float32)
    np.savez(path, x=x, y=y, x_test=x[:n_test], y_test=y[:n_test])
    return path


def mask_file(source: Path, out: Path, labelled: str = "0-1") -> Path:
    """`susl mask` of `source` with classes `labelled` labelled, into `out` (checked)."""
    invoke_ok(CliRunner(), ["mask", "--dataset", str(source), "--labelled-classes", labelled,
                            "--out", str(out)])
    return out


def invoke_ok(runner: CliRunner, args: list[str]) -> Result:
    """`susl ARGS` through the runner; exit 0 required (the output in the failure message)."""
    from susl_cli.cli import app  # imported when called: collecting the tests stays light

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (stdlib name)
        pass


@contextlib.contextmanager
def serve_folder(root: Path) -> Iterator[str]:
    """Serve `root` over real HTTP on 127.0.0.1 from a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def assert_one_line_error(result: Result, *, absent: Path | None = None,
                          contains: str | None = None) -> str:
    """The CLI contract for failures: non-zero exit, exactly one stderr line, no traceback,
    and (when given) no file at `absent` nor temporary leftovers beside it."""
    assert result.exit_code != 0, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), repr(result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    if contains is not None:
        assert contains in result.stderr, result.stderr
    if absent is not None:
        assert not absent.exists()
        if absent.parent.is_dir():
            assert not [p for p in absent.parent.iterdir() if p.name.startswith(f".{absent.name}")]
    return result.stderr


def read_only_folder(folder: Path, monkeypatch) -> Path:
    """Create a folder nobody may write into. Root ignores permissions, so under root
    os.access is also told that the folder is read-only (restored after the test)."""
    import os

    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: False
                            if Path(path) == folder and mode & os.W_OK
                            else real_access(path, mode, **kw))
    return folder
