"""The placement rule of the experiment grid's worker slots, on GPUs faked with monkeypatch."""

from __future__ import annotations

import pytest

from susl_cli.errors import DeviceError
from susl_cli.placement import default_jobs, describe_placement, slot_devices


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_slots_go_round_robin_over_the_gpus(fake_gpus, device: str) -> None:
    fake_gpus(2)
    assert default_jobs(device) == 2  # one process per GPU
    assert slot_devices(device, 2) == ("cuda:0", "cuda:1")
    assert slot_devices(device, 5) == ("cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0")
    fake_gpus(3)
    assert slot_devices(device, 4) == ("cuda:0", "cuda:1", "cuda:2", "cuda:0")


def test_a_fixed_gpu_or_the_cpu_takes_every_slot(fake_gpus) -> None:
    fake_gpus(2)
    assert slot_devices("cuda:1", 3) == ("cuda:1",) * 3
    assert default_jobs("cuda:1") == 1 and default_jobs("cpu") == 1
    assert slot_devices("cpu", 2) == ("cpu", "cpu")
    fake_gpus(0)
    assert slot_devices("auto", 2) == ("cpu", "cpu") and default_jobs("auto") == 1


def test_cuda_without_a_gpu_is_a_domain_error(fake_gpus) -> None:
    fake_gpus(0)
    with pytest.raises(DeviceError, match="no CUDA GPU is available: use --device cpu"):
        slot_devices("cuda", 2)
    with pytest.raises(DeviceError, match="no CUDA GPU is available"):
        default_jobs("cuda")


def test_the_placement_text_counts_gpus_and_jobs_per_gpu(fake_gpus) -> None:
    fake_gpus(2)
    assert describe_placement(slot_devices("cuda", 4)) == "2 x NVIDIA H200, 4 jobs (2 per GPU)"
    assert describe_placement(slot_devices("cuda", 3)) == "2 x NVIDIA H200, 3 jobs (1-2 per GPU)"
    assert describe_placement(slot_devices("cuda", 1)) == "1 x NVIDIA H200, 1 job (1 per GPU)"
    assert describe_placement(("cpu", "cpu")) == "2 jobs on the CPU"
    fake_gpus(2, "NVIDIA A100", "NVIDIA H200")
    assert describe_placement(slot_devices("cuda", 2)) == (
        "1 x NVIDIA A100 + 1 x NVIDIA H200, 2 jobs (1 per GPU)")
