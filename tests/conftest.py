"""Shared fixtures. Real-data tests read ../shared/datasets (or $SUSL_DATA_DIR) and fail, not skip,
when it is missing: a silent skip would hide that the data tests never ran."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.data_helpers import mask_file, write_blob_npz, write_tiny_npz

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "datasets"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu`-marked tests skip cleanly on a machine without CUDA (benchmarks/gpu_check.sh
    runs them where there is one)."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch  # only when a gpu test was collected

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in gpu:
        item.add_marker(skip)


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


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch):
    """fake_gpus(G, *names): torch sees G CUDA GPUs (G = 0: no CUDA), named after `names`
    in turn (default "NVIDIA H200"), to test GPU placement on a machine without one."""
    import torch

    def fake(count: int, *names: str) -> None:
        names = names or ("NVIDIA H200",)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_device_name",
                            lambda device: names[torch.device(device).index % len(names)])
    return fake


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Never touch the user's real cache folder from tests."""
    monkeypatch.setenv("SUSL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_image_mask(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mask file of write_tiny_npz's 6x6 'images' (4 classes, 0-1 labelled, 200 training
    and 40 test points). Session-scoped: read-only."""
    folder = tmp_path_factory.mktemp("tiny-image-mask")
    return mask_file(write_tiny_npz(folder / "tiny.npz", image=True), folder / "tiny-mask.h5")


@pytest.fixture(scope="session")
def blob_mask(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mask file of write_blob_npz's flat 30-d points (4 classes, 0-1 labelled).
    Session-scoped: read-only."""
    folder = tmp_path_factory.mktemp("blob-mask")
    return mask_file(write_blob_npz(folder / "tiny.npz"), folder / "tiny-mask.h5")


# 3 epochs left the two labelled tiny classes in one component on 1-2 of 8 seeds (label
# evidence on, with each form of its loss measured); from 6 on, on none of them
FIXTURE_EPOCHS = 6


def _train(mask: Path, run: Path, model: str) -> Path:
    from susl_cli.cli import app

    result = CliRunner().invoke(app, [
        "train", str(mask), "--model", model, "--epochs", str(FIXTURE_EPOCHS), "--batch-size", "20",
        "--labelled-batch-size", "10", "--extra-components", "4", "--hidden-units", "16",
        "--latent-dim", "2", "--learning-rate", "0.01", "--quiet", "--device", "cpu",
        "--out", str(run)])
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="session")
def tiny_image_run(tiny_image_mask: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[Path, Path]:
    """(mask file, checkpoint) of a GM-DGM trained FIXTURE_EPOCHS epochs on tiny 6x6 'images'
    (2 of 4 classes labelled). Session-scoped: treat both files as read-only."""
    run = tmp_path_factory.mktemp("tiny-image") / "tiny-run.h5"
    return tiny_image_mask, _train(tiny_image_mask, run, "gmdgm")


@pytest.fixture(scope="session")
def tiny_real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(mask file, checkpoint) of an M2 trained on tiny real-valued 12-d vectors. Read-only."""
    folder = tmp_path_factory.mktemp("tiny-real")
    mask = mask_file(write_tiny_npz(folder / "tiny.npz", image=False), folder / "tiny-mask.h5")
    return mask, _train(mask, folder / "tiny-run.h5", "m2")
