"""Fixtures the CLI command tests share: broken inputs and unwritable places."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.data_helpers import read_only_folder


@pytest.fixture
def damaged_checkpoint(tiny_image_run: tuple[Path, Path], tmp_path: Path) -> Path:
    """The first half of the tiny GM-DGM checkpoint, as a cut-off download leaves it."""
    data = tiny_image_run[1].read_bytes()
    broken = tmp_path / "broken.h5"
    broken.write_bytes(data[: len(data) // 2])
    return broken


@pytest.fixture
def read_only_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder nobody may write into; writable again afterwards, so tmp_path cleans up."""
    folder = read_only_folder(tmp_path / "read-only", monkeypatch)
    yield folder
    folder.chmod(0o700)
