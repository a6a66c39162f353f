"""The CUDA path (marked `gpu`: skipped without a CUDA device, run by benchmarks/gpu_check.sh).

CPU and CUDA draw different random numbers (different generators), so the objective is
compared with z at the posterior mean (no draw) on the same weights and batch; the training
runs check that a checkpoint moves between the devices and resumes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from susl_cli import losses
from susl_cli.cli import app
from susl_cli.config import ModelConfig, NetworkSettings, ObjectiveConfig
from susl_cli.models import Batch, GuardState, build_model
from susl_cli.runs import load_model

pytestmark = pytest.mark.gpu

TRAIN = ["--epochs", "2", "--batch-size", "20", "--labelled-batch-size", "10",
         "--extra-components", "4", "--hidden-units", "16", "--latent-dim", "2",
         "--learning-rate", "0.01", "--quiet"]


@pytest.mark.parametrize("name", ["m2", "gmdgm"])
def test_cuda_loss_and_gradient_equal_the_cpu_ones(name, monkeypatch) -> None:
    monkeypatch.setattr(losses, "sample_normal", lambda mean, logvar, generator, rows=None: mean)
    config = ModelConfig(model=name, input_dim=10, n_components=4, n_labelled=2,
                         prior=(0.4, 0.3, 0.2, 0.1),
                         settings=NetworkSettings(latent_dim=3, hidden_units=16))
    model = build_model(config, ObjectiveConfig(marginal_kl=0.5, labelled_share_cap=1.1))
    torch.manual_seed(0)
    model.reset_parameters()
    rng = torch.Generator().manual_seed(1)
    x_l, x_u = torch.rand(6, 10, generator=rng), torch.rand(9, 10, generator=rng)
    y_l = torch.tensor([0, 1, 1, 0, 1, 0])
    found = {}
    for device in ("cpu", "cuda"):
        model.to(device).zero_grad()
        guard = GuardState(torch.tensor([2.0, 0.0], device=device),
                           torch.tensor([0.05, 0.1], device=device))
        out = model(Batch(x_l.to(device), y_l.to(device), x_u.to(device), None, guard))
        out.loss.backward()
        found[device] = (out.loss.item(), [p.grad.cpu() for p in model.parameters()])
    assert found["cuda"][0] == pytest.approx(found["cpu"][0], rel=1e-5)
    for a, b in zip(found["cuda"][1], found["cpu"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_cuda_checkpoint_resumes_on_the_cpu_and_back(tiny_image_run, tmp_path, runner):
    mask = tiny_image_run[0]
    for first, then in (("cuda", "cpu"), ("cpu", "cuda")):
        out = tmp_path / f"{first}-then-{then}.h5"
        result = runner.invoke(app, ["train", str(mask), *TRAIN, "--device", first, "--out",
                                     str(out)])
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, ["train", str(mask), "--resume", "--epochs", "3",
                                     "--quiet", "--device", then, "--out", str(out)])
        assert result.exit_code == 0, result.output
        run = load_model(out)
        assert run.epoch == 3 and all(torch.isfinite(torch.tensor(run.history["loss"])))


def test_training_data_lives_on_the_device(tiny_image_run) -> None:
    from susl_cli.storage.masked import read_masked_dataset
    from susl_cli.training_data import prepare_data

    run = load_model(tiny_image_run[1], "cuda")
    masked = read_masked_dataset(tiny_image_run[0])
    data = prepare_data(run, masked.x_train, masked.y_observed, torch.device("cuda"))
    assert data.x_unlabelled.is_cuda and data.x_labelled.is_cuda and data.y_labelled.is_cuda


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpu_processes_train_one_model(tiny_image_run, tmp_path) -> None:
    out = tmp_path / "ddp.h5"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                           "2", "-m", "susl_cli", "train", str(tiny_image_run[0]), *TRAIN,
                           "--device", "cuda", "--out", str(out)],
                          capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_model(out).meta.world_size == 2
