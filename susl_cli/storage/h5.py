"""HDF5 plumbing shared by masked-dataset and checkpoint files.

Atomic writes: everything goes to a temporary file in the destination folder, which is renamed
over the final name only once it is complete, so a crash or kill never leaves a half-written
file under the name the user asked for.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from susl_cli import __version__
from susl_cli.errors import FileFormatError, OutputError

FORMAT_VERSION = 1

# Root attributes every susl file has.
ATTR_KIND = "susl_kind"
ATTR_FORMAT_VERSION = "susl_format_version"
ATTR_SUSL_VERSION = "susl_version"

KIND_MASKED_DATASET = "masked-dataset"
KIND_CHECKPOINT = "checkpoint"

_KIND_HINTS = {
    KIND_MASKED_DATASET: "make one with `susl mask`",
    KIND_CHECKPOINT: "make one with `susl train`",
}

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_output_path(path: Path, overwrite: bool) -> None:
    """Fail early, before any work, if `path` cannot be written as asked."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {str(parent)!r} does not exist: create it first")
    if path.is_dir():
        raise OutputError(f"output path {str(path)!r} is a folder: give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{str(path)!r} already exists: pass --overwrite to replace it")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write to folder {str(parent)!r}: check its permissions")


@contextlib.contextmanager
def atomic_h5_write(path: Path, kind: str, overwrite: bool) -> Iterator[h5py.File]:
    """Yield an open HDF5 file that appears at `path` only if the block finishes."""
    path = Path(path)
    check_output_path(path, overwrite)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs[ATTR_KIND] = kind
            f.attrs[ATTR_FORMAT_VERSION] = FORMAT_VERSION
            f.attrs[ATTR_SUSL_VERSION] = __version__
            yield f
        with open(tmp, "rb") as fh:  # data on disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; honour the umask
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise OutputError(
                f"no space left on the device while writing {str(path)!r}: free some space"
            ) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def peek_kind(path: Path) -> str:
    """Return the susl kind of a file, or raise a FileFormatError that says what it is instead."""
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"{str(path)!r} does not exist: check the path")
    if path.is_dir():
        raise FileFormatError(f"{str(path)!r} is a folder, not a susl .h5 file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head != HDF5_SIGNATURE:
        raise FileFormatError(
            f"{str(path)!r} is not an HDF5 file: give a file made by `susl mask` or `susl train`"
        )
    try:
        with h5py.File(path, "r") as f:
            kind = f.attrs.get(ATTR_KIND)
    except OSError:
        raise FileFormatError(
            f"{str(path)!r} is a damaged HDF5 file (truncated or corrupt): recreate it"
        ) from None
    if kind is None:
        raise FileFormatError(
            f"{str(path)!r} is an HDF5 file but not one written by susl: "
            "give a file made by `susl mask` or `susl train`"
        )
    return str(kind)


@contextlib.contextmanager
def open_for_reading(path: Path, expected_kind: str) -> Iterator[h5py.File]:
    """Open a susl file of the expected kind, turning every low-level failure into one sentence."""
    kind = peek_kind(path)
    if kind != expected_kind:
        raise FileFormatError(
            f"{str(path)!r} is a {kind} file, but this needs a {expected_kind} file: "
            f"{_KIND_HINTS.get(expected_kind, '')}"
        )
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise FileFormatError(f"{str(path)!r} is damaged: recreate it") from None
    try:
        version = int(f.attrs.get(ATTR_FORMAT_VERSION, -1))
        if version != FORMAT_VERSION:
            raise FileFormatError(
                f"{str(path)!r} has file format version {version}, this susl reads version "
                f"{FORMAT_VERSION}: recreate it with this version of susl"
            )
        yield f
    except (KeyError, OSError, ValueError, TypeError) as err:
        raise FileFormatError(
            f"{str(path)!r} is damaged or incomplete ({type(err).__name__}: {err}): recreate it"
        ) from None
    finally:
        f.close()


def put_json_attr(obj: h5py.HLObject, name: str, value: Any) -> None:
    """Store structured metadata as a JSON string attribute (never pickle)."""
    obj.attrs[name] = json.dumps(value, sort_keys=True)


def get_json_attr(obj: h5py.HLObject, name: str) -> Any:
    return json.loads(str(obj.attrs[name]))


def write_array(group: h5py.Group, name: str, array: np.ndarray) -> None:
    """Write an array compressed and chunked (scalars and empty arrays stored plainly)."""
    array = np.asarray(array)
    if array.ndim == 0 or array.size == 0:
        group.create_dataset(name, data=array)
    else:
        group.create_dataset(name, data=array, compression="gzip", compression_opts=4,
                             shuffle=True, chunks=True)


def read_array(group: h5py.Group, name: str) -> np.ndarray:
    if name not in group:
        raise KeyError(f"missing dataset {name!r}")
    return np.asarray(group[name][()])
