"""A mask file's training inputs left on disk and read by rows (streamed training).

`MaskRows` holds /train/x of a masked-dataset file open for the length of a training run and
reads the rows it is asked for, so a file larger than memory never has to be loaded whole.
It behaves enough like the in-memory array for the code that reads it: `len`, `.shape`,
contiguous slices `rows[a:b]` (inference, transform fitting) and `take(rows)` for any rows.

HDF5 stores the array in compressed chunks (`write_array(by_rows=True)`: ~1 MB of whole
rows each); reading one row decompresses the chunk holding it. `take` therefore reads, per
chunk, one contiguous span, and the file's chunk cache keeps a window of chunks decompressed,
so the block-shuffled batches of susl_cli/training_data.py reuse chunks instead of
decompressing them again. (Masks written before row chunks split rows over many chunks:
they stream too, more slowly.)
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from susl_cli.errors import FileFormatError
from susl_cli.storage.h5 import H5_READ_ERRORS, KIND_MASKED_DATASET, open_for_reading

DEFAULT_BLOCK_ROWS = 4096  # an unchunked (contiguous) array: any span reads cheaply
CACHE_SLOTS = 100_003  # hash slots of HDF5's chunk cache (a prime, well above the chunks held)


def train_layout(path: Path) -> tuple[int, tuple[int, ...], int]:
    """(rows, shape of one row, rows per HDF5 chunk) of a mask file's training inputs, read
    from the file's metadata only."""
    with open_for_reading(Path(path), KIND_MASKED_DATASET) as f:
        x = f["train"]["x"]
        if not isinstance(x, h5py.Dataset) or x.ndim < 2:
            raise FileFormatError(f"{str(path)!r} is inconsistent (no train input array): "
                                  "recreate it with susl mask")
        chunk = int(x.chunks[0]) if x.chunks else DEFAULT_BLOCK_ROWS
        return int(x.shape[0]), tuple(int(s) for s in x.shape[1:]), chunk


class MaskRows:
    """/train/x of a verified mask file, open for reading rows (close it when done)."""

    def __init__(self, path: Path, cache_bytes: int) -> None:
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r", rdcc_nbytes=int(cache_bytes),
                                   rdcc_nslots=CACHE_SLOTS)
            self._x = self._file["train"]["x"]
        except H5_READ_ERRORS:
            raise FileFormatError(f"{str(self.path)!r} is damaged: recreate it") from None
        self.shape: tuple[int, ...] = tuple(int(s) for s in self._x.shape)
        self._check_stored()
        self.dtype = self._x.dtype
        self.ndim = len(self.shape)
        self.chunk_rows = int(self._x.chunks[0]) if self._x.chunks else DEFAULT_BLOCK_ROWS
        self.rows_read = 0  # rows returned by take(): what this process read for training

    def _check_stored(self) -> None:
        """Refuse an array that declares more chunks than the file stores (susl writes every
        chunk; a tiny hostile file could declare terabytes of zeros to be streamed)."""
        chunks = self._x.chunks
        if not chunks:
            return
        expected = int(np.prod([-(-n // c) for n, c in zip(self.shape, chunks, strict=True)],
                               dtype=object))
        stored = self._x.id.get_num_chunks()
        if stored < expected:
            self.close()
            raise FileFormatError(
                f"{str(self.path)!r} declares training inputs of shape {self.shape} but stores "
                f"{stored} of their {expected} chunks: the file is corrupt; recreate it with "
                "susl mask")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, span: slice) -> np.ndarray:
        """Rows span.start..span.stop (a contiguous slice only)."""
        if not isinstance(span, slice) or span.step not in (None, 1):
            raise TypeError("MaskRows reads contiguous slices; use take() for other rows")
        start, stop, _ = span.indices(len(self))
        return self._read(slice(start, stop))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given rows (any order, repeats allowed), in that order: (len(rows), ...)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.float32)
        if len(rows) == 0:
            return out
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        if ordered[0] < 0 or ordered[-1] >= len(self):
            raise IndexError(f"rows outside 0..{len(self) - 1}")
        # Per HDF5 chunk touched: rows that fill at least half of their span are read as one
        # span (the diagnostics' contiguous passes), scattered ones row by row (a batch of a
        # block shuffle: h5py's single-row read is ~4x cheaper than a span read; measured on
        # MNIST, 6 vs 13 ms per batch of 100). Either way the cache decompresses a chunk once.
        chunk_of = ordered // self.chunk_rows
        cuts = np.flatnonzero(np.diff(chunk_of)) + 1
        picked = []
        for group in np.split(ordered, cuts):
            first, last = int(group[0]), int(group[-1])
            if 2 * len(group) >= last - first + 1:
                picked.append(self._read(slice(first, last + 1))[group - first])
            else:
                picked.append(np.stack([self._read(int(r)) for r in group]))
        out[order] = np.concatenate(picked)
        self.rows_read += len(rows)
        return out

    def _read(self, where: int | slice) -> np.ndarray:
        """One row (an int: h5py's fast path) or a span of rows."""
        try:
            return np.asarray(self._x[where], dtype=np.float32)
        except H5_READ_ERRORS as err:
            detail = " ".join(str(err).split())[:160]
            rows = where if isinstance(where, int) else f"{where.start}..{where.stop - 1}"
            raise FileFormatError(f"{str(self.path)!r}: cannot read training rows {rows} "
                                  f"({detail}): the file is damaged") from None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MaskRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
