"""HDF5 plumbing shared by masked-dataset and checkpoint files.

Atomic writes: the file is built in memory, written to a temporary file in the destination
folder (`.NAME.PID.XXXXXXXX.tmp`), flushed to disk and only then renamed over the final name, so
a crash or kill never leaves a half-written file under the name the user asked for. A temporary
left behind by a killed process is removed by the next write to the same name.

Sealed files: every file starts with a 512-byte HDF5 user block (which HDF5 and h5py skip)
holding the SHA-256 of the rest of the file. Readers check it before the HDF5 library parses a
single byte, so a truncated, bit-flipped or overwritten file is refused with one sentence instead
of being misread or crashing the HDF5 C library (which a damaged file can make segfault). Files
without a seal (written by susl 0.1 before sealing, or by other programs) are still read.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from susl_cli import __version__
from susl_cli.errors import FileFormatError
from susl_cli.resources import exceeds_memory, format_bytes
from susl_cli.storage.atomic import (  # noqa: F401  re-exported: older imports keep working
    interrupt_pending,
    interrupts_deferred,
    remove_stale_temporaries,
    write_atomic,
)
from susl_cli.storage.files import (  # noqa: F401  re-exported: older imports keep working
    check_output_path,
    check_regular_file,
    note_input,
)

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
USERBLOCK_SIZE = 512  # HDF5 looks for its signature at 0, 512, 1024, ...
SEAL_MAGIC = b"susl-sha256:"  # user block: magic, 64 hex digits of SHA-256(rest), "\n", zeros
_HASH_CHUNK = 1 << 20

# Errors h5py raises on damaged or unexpected content (it has no single base class for them).
H5_READ_ERRORS = (KeyError, OSError, ValueError, TypeError, RuntimeError, IndexError,
                  AttributeError)
_in_memory_names = itertools.count()


@contextlib.contextmanager
def atomic_h5_write(path: Path, kind: str, overwrite: bool, *,
                    inputs: Iterable[Path | None] = (),
                    may_replace_input: bool = False) -> Iterator[h5py.File]:
    """Yield an open HDF5 file that appears, sealed, at `path` only if the block finishes.

    The file is built in memory (HDF5 "core" driver without a backing store), so the HDF5
    library never writes to disk: disk errors surface as plain OSErrors from the one atomic
    writer (`atomic.write_atomic`), instead of failing inside HDF5's cache flush (which can crash
    the interpreter). Ctrl-C is held back while HDF5 runs (its callbacks would swallow it) and
    honoured before anything is renamed into place.
    """
    path = Path(path)
    check_output_path(path, overwrite, inputs, may_replace_input=may_replace_input)
    with interrupts_deferred():
        f = h5py.File(f"susl-in-memory-{os.getpid()}-{next(_in_memory_names)}.h5", "w",
                      driver="core", backing_store=False, userblock_size=USERBLOCK_SIZE)
        try:
            f.attrs[ATTR_KIND] = kind
            f.attrs[ATTR_FORMAT_VERSION] = FORMAT_VERSION
            f.attrs[ATTR_SUSL_VERSION] = __version__
            yield f
            f.flush()
            image = f.id.get_file_image()  # the file after the user block
        finally:
            f.close()
        if interrupt_pending():
            raise KeyboardInterrupt
        write_atomic(path, seal(image), overwrite=overwrite, inputs=inputs,
                     may_replace_input=may_replace_input)


def seal(image: bytes) -> bytes:
    """The user block that vouches for `image` (an HDF5 file image made with a 512-byte block)."""
    block = SEAL_MAGIC + hashlib.sha256(image).hexdigest().encode("ascii") + b"\n"
    return block.ljust(USERBLOCK_SIZE, b"\0") + image


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` atomically over `path` (kept for callers of susl 0.1: see `write_atomic`)."""
    write_atomic(path, data, overwrite=True)


def verify_file(path: Path) -> bool:
    """Check that `path` is an intact HDF5 file before the HDF5 library reads it.

    Returns True for a sealed susl file whose checksum matches, False for a plain HDF5 file
    (no seal: an older susl file or another program's); raises FileFormatError otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"{str(path)!r} does not exist: check the path")
    if path.is_dir():
        raise FileFormatError(f"{str(path)!r} is a folder, not a susl .h5 file")
    check_regular_file(path, FileFormatError)  # a FIFO would hang, a device never end
    note_input(path)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key in _verified:
            return _verified[key]
        sealed = _check_seal(path)
    except OSError as err:
        raise FileFormatError(f"cannot read {str(path)!r}: {err.strerror or err}") from None
    if len(_verified) > 64:
        _verified.clear()
    _verified[key] = sealed
    return sealed


_verified: dict[tuple[str, int, int, int], bool] = {}


def _check_seal(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(USERBLOCK_SIZE)
        if head[:8] == HDF5_SIGNATURE:
            return False
        if not head.startswith(SEAL_MAGIC):
            raise FileFormatError(f"{str(path)!r} is not an HDF5 file: give a file made by "
                                  "`susl mask` or `susl train`")
        digest = hashlib.sha256()
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    expected = (SEAL_MAGIC + digest.hexdigest().encode("ascii") + b"\n").ljust(
        USERBLOCK_SIZE, b"\0")
    if head != expected:
        raise FileFormatError(
            f"{str(path)!r} is damaged: its content no longer matches the checksum susl wrote "
            "(truncated, corrupted or edited): recreate it, or restore it from a copy"
        )
    return True


def reseal_file(path: Path) -> None:
    """Recompute the seal of a sealed file changed on purpose (tests, expert repairs)."""
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(SEAL_MAGIC):
        raise FileFormatError(f"{str(path)!r} has no susl seal to renew")
    path.write_bytes(seal(data[USERBLOCK_SIZE:]))


def peek_kind(path: Path) -> str:
    """Return the susl kind of a file, or raise a FileFormatError that says what it is instead."""
    path = Path(path)
    verify_file(path)
    try:
        with h5py.File(path, "r") as f:
            kind = f.attrs.get(ATTR_KIND)
            kind = kind.decode("utf-8") if isinstance(kind, bytes) else kind
    except H5_READ_ERRORS:
        raise FileFormatError(
            f"{str(path)!r} is a damaged HDF5 file (truncated or corrupt): recreate it"
        ) from None
    if kind is None:
        raise FileFormatError(
            f"{str(path)!r} is an HDF5 file but not one written by susl: "
            "give a file made by `susl mask` or `susl train`"
        )
    if not isinstance(kind, str):
        raise FileFormatError(f"{str(path)!r} is an HDF5 file with an unreadable susl kind: "
                              "give a file made by `susl mask` or `susl train`")
    return kind


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
    except H5_READ_ERRORS:
        raise FileFormatError(f"{str(path)!r} is damaged: recreate it") from None
    try:
        refuse_indirection(f, str(path), FileFormatError)
        version = int(f.attrs.get(ATTR_FORMAT_VERSION, -1))
        if version != FORMAT_VERSION:
            raise FileFormatError(
                f"{str(path)!r} has file format version {version}, this susl reads version "
                f"{FORMAT_VERSION}: recreate it with this version of susl"
            )
        yield f
    except H5_READ_ERRORS as err:
        detail = " ".join(str(err).split())[:200]
        raise FileFormatError(
            f"{str(path)!r} is damaged or incomplete ({type(err).__name__}: {detail}): "
            "recreate it"
        ) from None
    finally:
        f.close()


MAX_HDF5_OBJECTS = 100_000  # more links than any susl or plausible user file holds


def refuse_indirection(f: h5py.File, where: str, error: type[Exception]) -> None:
    """Refuse HDF5 features that make reading one file read others (or the whole machine).

    External raw storage (a dataset's bytes kept in any file, e.g. /etc/passwd), virtual
    datasets (mapped from other HDF5 files) and external links (to objects in other files)
    would let a hostile file make susl copy local files into its outputs. The check reads
    only link and dataset-creation metadata; external links are never followed.
    """
    seen = 0
    pending: list[h5py.Group] = [f]
    while pending:
        group = pending.pop()
        for name in group:
            seen += 1
            if seen > MAX_HDF5_OBJECTS:
                raise error(f"{where} holds more than {MAX_HDF5_OBJECTS} HDF5 objects: it is "
                            "not a data file susl can read")
            link = group.get(name, getlink=True)
            inside = f"{where}: {group.name.rstrip('/')}/{name}"
            if isinstance(link, h5py.ExternalLink):
                raise error(f"{inside} is an external link to {link.filename!r}: susl reads no "
                            "other files through HDF5; store the data in this file")
            if isinstance(link, h5py.SoftLink):
                continue  # a name for an object of this file, checked under its own name
            obj = group.get(name)
            if isinstance(obj, h5py.Group):
                pending.append(obj)
            elif isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    raise error(f"{inside} is a virtual dataset (mapped from other files): "
                                "susl reads no other files through HDF5; store the data here")
                if obj.external:
                    raise error(f"{inside} keeps its bytes in an external file "
                                f"({obj.external[0][0]!r}): susl reads no other files through "
                                "HDF5; store the data in this file")


def put_json_attr(obj: h5py.HLObject, name: str, value: Any) -> None:
    """Store structured metadata as a JSON string attribute (never pickle)."""
    obj.attrs[name] = json.dumps(value, sort_keys=True)


def get_json_attr(obj: h5py.HLObject, name: str) -> Any:
    return json.loads(str(obj.attrs[name]))


ROW_CHUNK_BYTES = 1 << 20  # rows per chunk of a row-chunked array: about 1 MB


def write_array(group: h5py.Group, name: str, array: np.ndarray, *,
                by_rows: bool = False) -> None:
    """Write an array compressed and chunked (scalars and empty arrays stored plainly).

    `by_rows`: each chunk holds whole rows (about ROW_CHUNK_BYTES of them), so reading a row
    decompresses one chunk; HDF5's own choice may also split the other axes (MNIST's
    (60000, 28, 28) into 196 chunks per row), which makes reading rows (streamed training,
    storage/rows.py) slow.
    """
    array = np.asarray(array)
    if array.ndim == 0 or array.size == 0:
        group.create_dataset(name, data=array)
        return
    chunks: bool | tuple[int, ...] = True
    row_bytes = array[0].nbytes
    if by_rows and array.ndim > 1 and 0 < row_bytes <= ROW_CHUNK_BYTES:
        chunks = (min(len(array), ROW_CHUNK_BYTES // row_bytes), *array.shape[1:])
    group.create_dataset(name, data=array, compression="gzip", compression_opts=4,
                         shuffle=True, chunks=chunks)


def read_array(group: h5py.Group, name: str) -> np.ndarray:
    if name not in group:
        raise KeyError(f"missing dataset {name!r}")
    dataset = group[name]
    check_declared_size(dataset, f"{group.file.filename}:{dataset.name}")
    return np.asarray(dataset[()])


def check_declared_size(dataset: h5py.Dataset, where: str) -> None:
    """Refuse to read an array larger than free memory (a tiny file can declare terabytes)."""
    if not isinstance(dataset, h5py.Dataset):
        raise TypeError(f"{where} is a group, expected an array")
    n_bytes = int(np.prod(dataset.shape, dtype=object)) * dataset.dtype.itemsize
    available = exceeds_memory(n_bytes)
    if available is not None:
        raise FileFormatError(
            f"{where} declares an array of shape {dataset.shape} ({format_bytes(n_bytes)}), more "
            f"than the {format_bytes(available)} of free memory: the file is corrupt, or too big "
            "for this machine"
        )
