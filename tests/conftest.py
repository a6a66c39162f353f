"""Shared fixtures. Real-data tests read ../shared/datasets (or $SUSL_DATA_DIR) and fail, not skip,
when it is missing: a silent skip would hide that the data tests never ran."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("SUSL_DATA_DIR", DEFAULT_DATA_DIR))
    if not (path / "mnist").is_dir():
        pytest.fail(
            f"real datasets not found at {path}: set SUSL_DATA_DIR to the shared datasets folder"
        )
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Never touch the user's real cache folder from tests."""
    monkeypatch.setenv("SUSL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
