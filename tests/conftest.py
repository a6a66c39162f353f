"""Shared fixtures. Real-data tests read ../shared/datasets (or $SUSL_DATA_DIR) and fail, not skip,
when it is missing: a silent skip would hide that the data tests never ran."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

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


def _write_tiny_npz(path: Path, image: bool, seed: int = 0) -> Path:
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


def _mask_and_train(folder: Path, image: bool, model: str = "gmdgm") -> tuple[Path, Path]:
    from susl_cli.cli import app

    runner = CliRunner()
    source = _write_tiny_npz(folder / "tiny.npz", image)
    mask = folder / "tiny-mask.h5"
    result = runner.invoke(app, ["mask", "--dataset", str(source), "--labelled-classes", "0-1",
                                 "--out", str(mask)])
    assert result.exit_code == 0, result.output
    run = folder / "tiny-run.h5"
    result = runner.invoke(app, ["train", str(mask), "--model", model, "--epochs", "3",
                                 "--batch-size", "20", "--labelled-batch-size", "10",
                                 "--extra-components", "4", "--hidden-units", "16",
                                 "--latent-dim", "2", "--learning-rate", "0.01", "--quiet",
                                 "--device", "cpu", "--out", str(run)])
    assert result.exit_code == 0, result.output
    return mask, run


@pytest.fixture(scope="session")
def tiny_image_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(mask file, checkpoint) of a GM-DGM trained 3 epochs on tiny 6x6 'images' (2 of 4
    classes labelled). Session-scoped: treat both files as read-only."""
    return _mask_and_train(tmp_path_factory.mktemp("tiny-image"), image=True)


@pytest.fixture(scope="session")
def tiny_real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(mask file, checkpoint) of an M2 trained on tiny real-valued 12-d vectors. Read-only."""
    return _mask_and_train(tmp_path_factory.mktemp("tiny-real"), image=False, model="m2")
