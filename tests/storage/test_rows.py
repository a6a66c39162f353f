"""A mask file's training inputs read by rows (streamed training): the rows asked for, in
the order asked, slices, the layout read from metadata, and a streamed read of the mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from susl_cli.data.masking import make_masked_dataset
from susl_cli.data.sources import Dataset
from susl_cli.storage.masked import read_masked_dataset, write_masked_dataset
from susl_cli.storage.rows import MaskRows, train_layout


@pytest.fixture(scope="module")
def mask(tmp_path_factory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((300, 3, 4)).astype(np.float32)
    y = np.arange(300, dtype=np.int64) % 3
    data = Dataset("toy", x, y, x[:5], y[:5], ("a", "b", "c"), "image", "0" * 64)
    masked = make_masked_dataset(data, (0, 2), label_fraction=0.2, seed=0)
    return write_masked_dataset(tmp_path_factory.mktemp("rows") / "m.h5", masked), x


def test_take_returns_the_rows_asked_for_in_that_order_and_counts_them(mask) -> None:
    path, x = mask
    n, shape, chunk = train_layout(path)
    assert (n, shape) == (300, (3, 4)) and 1 <= chunk <= 300
    with MaskRows(path, cache_bytes=1 << 20) as rows:
        assert len(rows) == 300 and rows.shape == (300, 3, 4) and rows.chunk_rows == chunk
        wanted = np.array([299, 0, 150, 150, 7, 100, 99])  # any order, a repeat
        np.testing.assert_array_equal(rows.take(wanted), x[wanted])
        assert rows.rows_read == len(wanted)
        np.testing.assert_array_equal(rows[10:25], x[10:25])
        np.testing.assert_array_equal(rows[290:400], x[290:])
        assert rows.take(np.zeros(0, np.int64)).shape == (0, 3, 4)
        with pytest.raises(IndexError):
            rows.take(np.array([300]))
        with pytest.raises(TypeError, match="contiguous"):
            rows[::2]


def test_a_streamed_read_leaves_the_inputs_on_disk_and_checks_the_rest(mask) -> None:
    path, x = mask
    whole = read_masked_dataset(path)
    streamed = read_masked_dataset(path, stream_cache_bytes=1 << 20)
    try:
        assert isinstance(streamed.x_train, MaskRows)
        np.testing.assert_array_equal(streamed.x_train[0:300], x)
        np.testing.assert_array_equal(streamed.y_observed, whole.y_observed)
        assert streamed.metadata == whole.metadata and streamed.x_test is None
    finally:
        streamed.x_train.close()


def test_masks_store_whole_rows_per_chunk(mask) -> None:
    import h5py

    path, x = mask
    with h5py.File(path, "r") as f:
        assert f["train/x"].chunks == (300, 3, 4)  # 300 rows of 48 bytes: under 1 MB


def test_an_array_that_declares_more_than_it_stores_is_refused(tmp_path) -> None:
    import h5py

    from susl_cli.errors import FileFormatError

    path = tmp_path / "sparse.h5"
    with h5py.File(path, "w") as f:  # no chunk written: 10**8 rows of zeros, in a tiny file
        f.create_group("train").create_dataset("x", shape=(10**8, 10), dtype="f4",
                                               chunks=(1000, 10), compression="gzip")
    with pytest.raises(FileFormatError, match=r"stores 0 of their 100000 chunks"):
        MaskRows(path, cache_bytes=1 << 20)
