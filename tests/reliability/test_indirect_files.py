"""Every reader refuses non-regular files and HDF5 indirection, at once, without reading.

- A FIFO would block a reader for ever; a symbolic link to /dev/zero never ends (an .npz
  reader hung, a CSV reader grew to 3 GB in 3.5 s). Both are refused before being opened.
- HDF5 can make one file read others: external raw storage (a dataset's bytes in any file,
  /etc/passwd or /proc/self/environ), virtual datasets (mapped from other HDF5 files) and
  external links. A hostile file used them to copy local files into susl's outputs. All three
  are refused in user data files and in files claiming to be susl's own.

Each case runs under an alarm: a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from .reliability_helpers import check_clean_error, invoke, write_tiny_npz

CPU = ["--device", "cpu"]
HANG_SECONDS = 20


@contextlib.contextmanager
def no_hang(what: str) -> Iterator[None]:
    def hung(signum, frame):
        raise TimeoutError(f"{what} still running after {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def data_readers(f: Path, run: Path, out: Path) -> list[list]:
    """Every command that reads a user data file."""
    return [["mask", "-d", f, "-l", "0-1", "-o", out / "m.h5", "--quiet"],
            ["predict", run, f, "-o", out / "p.csv", *CPU]]


def mask_readers(f: Path, run: Path, out: Path) -> list[list]:
    """Every command that reads a file in the place of a susl mask file."""
    return [["info", f], ["train", f, "-o", out / "r.h5", "--epochs", 1, "--quiet", *CPU],
            ["evaluate", run, "--data", f, *CPU],
            ["sample", run, "--data", f, "-o", out / "s.csv", *CPU],
            ["predict", run, f, "-o", out / "p.csv", *CPU],
            ["predict", run, f, "--mask", f, "-o", out / "p.csv", *CPU]]


def checkpoint_readers(f: Path, mask: Path, out: Path) -> list[list]:
    return [["info", f], ["evaluate", f, *CPU], ["sample", f, "-o", out / "s.csv", *CPU],
            ["predict", f, mask, "-o", out / "p.csv", *CPU],
            ["train", mask, "-o", f, "--resume", "--epochs", 2, "--quiet", *CPU]]


def refused(commands: list[list], expected: str, out: Path, figures) -> None:
    for args in commands:
        with no_hang(" ".join(map(str, args[:2]))):
            message = check_clean_error(invoke(args))
        assert expected in message, (args, message)
        assert not any(out.iterdir()), (args, sorted(p.name for p in out.iterdir()))
        figures.add("indirect_files")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "out").mkdir()
    return tmp_path


@pytest.mark.attack_bug("a FIFO given as input hung every command that reads files; an .npz "
                        "symlinked to /dev/zero hung and a .csv symlinked to /dev/zero grew to "
                        "3 GB in 3.5 s")
def test_fifos_and_devices_are_refused_by_every_reader(folder: Path, tiny_image_run, figures):
    mask, run = tiny_image_run
    out = folder / "out"
    for suffix in (".npz", ".csv", ".h5"):
        fifo = folder / f"fifo{suffix}"
        os.mkfifo(fifo)
        zero = folder / f"zero{suffix}"
        zero.symlink_to("/dev/zero")
        for path in (fifo, zero):
            readers = data_readers(path, run, out)
            if suffix == ".h5":
                readers += mask_readers(path, run, out) + checkpoint_readers(path, mask, out)
            refused(readers, "not a regular file", out, figures)


def _user_h5(path: Path, make_x: Callable[[h5py.File, np.ndarray], None]) -> Path:
    with np.load(write_tiny_npz(path.with_suffix(".npz"))) as z:
        with h5py.File(path, "w") as f:
            make_x(f, z["x"])
            for key in ("y", "x_test", "y_test"):
                f[key] = z[key]
    return path


def _external_raw(target: str) -> Callable[[h5py.File, np.ndarray], None]:
    def make(f: h5py.File, x: np.ndarray) -> None:
        f.create_dataset("x", shape=x.shape, dtype="u1",
                         external=[(target, 0, h5py.h5f.UNLIMITED)])
    return make


def _virtual(source: Path) -> Callable[[h5py.File, np.ndarray], None]:
    def make(f: h5py.File, x: np.ndarray) -> None:
        with h5py.File(source, "w") as s:
            s["x"] = x
        layout = h5py.VirtualLayout(shape=x.shape, dtype=x.dtype)
        layout[:] = h5py.VirtualSource(str(source), "x", shape=x.shape)
        f.create_virtual_dataset("x", layout)
    return make


def _external_link(source: Path) -> Callable[[h5py.File, np.ndarray], None]:
    def make(f: h5py.File, x: np.ndarray) -> None:
        with h5py.File(source, "w") as s:
            s["x"] = x
        f["x"] = h5py.ExternalLink(str(source), "x")
    return make


@pytest.mark.attack_bug("a user .h5 whose x had HDF5 external storage pointing at /etc/passwd "
                        "(or /proc/self/environ), or was a virtual dataset over another file, "
                        "was followed silently: the mask's train/x held the other file's bytes")
def test_hdf5_indirection_is_refused_in_user_files(folder: Path, tiny_image_run, figures):
    _, run = tiny_image_run
    out = folder / "out"
    secret = folder / "secret.txt"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 64)
    cases = {
        "external storage": _user_h5(folder / "ext.h5", _external_raw(str(secret))),
        "environ": _user_h5(folder / "env.h5", _external_raw("/proc/self/environ")),
        "virtual dataset": _user_h5(folder / "vds.h5", _virtual(folder / "vds-source.h5")),
        "external link": _user_h5(folder / "link.h5", _external_link(folder / "l-source.h5")),
    }
    expected = {"external storage": "external file", "environ": "external file",
                "virtual dataset": "virtual dataset", "external link": "external link"}
    for name, path in cases.items():
        refused(data_readers(path, run, out), expected[name], out, figures)


def test_hdf5_indirection_is_refused_in_files_claiming_to_be_susl_files(
        folder: Path, tiny_image_run, figures):
    """An unsealed file (as susl wrote before sealing) with a mask's layout, an external x."""
    mask, run = tiny_image_run
    out = folder / "out"
    secret = folder / "secret.bin"
    secret.write_bytes(bytes(range(256)) * 4096)
    hostile = folder / "hostile-mask.h5"
    with h5py.File(mask, "r") as src, h5py.File(hostile, "w") as f:
        for key, value in src.attrs.items():
            f.attrs[key] = value
        for name in src:
            src.copy(src[name], f, name=name)
        shape = f["train"]["x"].shape
        del f["train"]["x"]
        f["train"].create_dataset("x", shape=shape, dtype="f4",
                                  external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
    refused(mask_readers(hostile, run, out), "external file", out, figures)
