"""Seed-batched training (susl_cli/seed_batch.py) against training each seed alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from susl_cli.cli import app
from susl_cli.distributed import SINGLE
from susl_cli.errors import ConfigError
from susl_cli.run_setup import prepare_run
from susl_cli.runs import ModelOptions, load_model
from susl_cli.seed_batch import SeedJob, fit_seeds, train_seeds
from susl_cli.train import SilentObserver, TrainingInterrupted, fit
from susl_cli.training_data import prepare_data

CPU = torch.device("cpu")
TIMING = ("seconds", "samples_per_s")  # wall-clock columns: never equal from run to run


@pytest.fixture(scope="module")
def mask(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes of 20-d grey 'images' (Bernoulli, re-binarised every step), 2 labelled."""
    from typer.testing import CliRunner

    folder = tmp_path_factory.mktemp("seed-batch")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    x = np.clip(rng.uniform(0.1, 0.9, (3, 20))[y] + rng.normal(0, 0.05, (90, 20)), 0, 1)
    np.savez(folder / "d.npz", x=x.astype(np.float32), y=y)
    out = folder / "mask.h5"
    result = CliRunner().invoke(app, ["mask", "--dataset", str(folder / "d.npz"),
                                      "--labelled-classes", "0-1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _setup(mask: Path, out: Path, seed: int, model: str = "gmdgm", resume: bool = False,
           **settings):
    options = ModelOptions(model=model, extra_components=2,
                           settings={"hidden_units": 16, "latent_dim": 2})
    overrides = {"batch_size": 16, "labelled_batch_size": 8, "epochs": 2, "seed": seed,
                 "learning_rate": 0.01, "checkpoint_seconds": 0.0, **settings}
    run, masked = prepare_run(mask, out, options, overrides, None, CPU, resume, False, SINGLE)
    return run, prepare_data(run, masked.x_train, masked.y_observed, CPU)


def _alone(mask: Path, folder: Path, seeds, **kwargs):
    runs = []
    for seed in seeds:
        run, data = _setup(mask, folder / f"alone{seed}.h5", seed, **kwargs)
        runs.append(fit(run, data, folder / f"alone{seed}.h5"))
    return runs


def _batched(mask: Path, folder: Path, seeds, observer=None, resume=False, **kwargs):
    paths = [folder / f"batched{seed}.h5" for seed in seeds]
    pairs = [_setup(mask, path, seed, resume=resume, **kwargs)
             for seed, path in zip(seeds, paths, strict=True)]
    return fit_seeds([r for r, _ in pairs], [d for _, d in pairs], paths, observer)


def _folder(parent: Path, name: str) -> Path:
    (parent / name).mkdir()
    return parent / name


def _weights(run) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in run.model.state_dict().items()}


def _assert_same(batched, alone, exact: bool = False) -> None:
    for b, a in zip(batched, alone, strict=True):
        assert b.epoch == a.epoch and b.train_config.seed == a.train_config.seed
        assert sorted(b.history) == sorted(a.history)
        wb, wa = _weights(b), _weights(a)
        for key in wa:
            if exact:
                np.testing.assert_array_equal(wb[key], wa[key], err_msg=key)
            else:
                np.testing.assert_allclose(wb[key], wa[key], rtol=1e-4, atol=1e-5, err_msg=key)
        for key in a.history:
            if key in TIMING:
                continue
            if exact:
                assert b.history[key] == a.history[key], key
            else:
                np.testing.assert_allclose(b.history[key], a.history[key], rtol=1e-5,
                                           atol=1e-6, err_msg=key)


def test_batched_seeds_train_as_each_seed_alone_and_write_its_checkpoint(mask, tmp_path):
    alone = _alone(mask, tmp_path, (0, 3))
    batched = _batched(mask, tmp_path, (0, 3))
    _assert_same(batched, alone)
    # the seeds really differ (own initialisation, data order and noise)
    assert not np.allclose(_weights(batched[0])["classifier.head.weight"],
                           _weights(batched[1])["classifier.head.weight"])
    for seed, run in zip((0, 3), batched, strict=True):  # one checkpoint per seed, as alone
        stored = load_model(tmp_path / f"batched{seed}.h5", with_optimizer=True)
        ref = load_model(tmp_path / f"alone{seed}.h5", with_optimizer=True)
        assert stored.meta.seed == seed and stored.epoch == 2 and stored.meta.completed
        _assert_same([stored], [run], exact=True)  # the file holds the run in memory
        _assert_same([stored], [ref])
        for p_b, p_a in zip(stored.model.parameters(), ref.model.parameters(), strict=True):
            for key in ("exp_avg", "exp_avg_sq"):
                np.testing.assert_allclose(stored.optimizer.state[p_b][key],
                                           ref.optimizer.state[p_a][key],
                                           rtol=1e-4, atol=1e-7)
        assert (tmp_path / f"batched{seed}.history.csv").exists() == \
            (tmp_path / f"alone{seed}.history.csv").exists()


def test_batched_seeds_are_bit_identical_from_run_to_run(mask, tmp_path):
    first = _batched(mask, _folder(tmp_path, "a"), (1, 2))
    second = _batched(mask, _folder(tmp_path, "b"), (1, 2))
    _assert_same(first, second, exact=True)


class _StopAfterFirstEpoch(SilentObserver):
    def epoch_finished(self, record: dict[str, float]) -> None:
        raise KeyboardInterrupt


class _StopInSecondEpoch(SilentObserver):
    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt


@pytest.mark.parametrize(("stopper", "seconds"), [
    (_StopAfterFirstEpoch, 0.0),  # epoch 1 checkpointed, then stopped
    (_StopInSecondEpoch, 0.0),
    (_StopInSecondEpoch, 3600.0),  # no checkpoint due yet: Ctrl-C saves epoch 1 itself
])
def test_batched_seeds_resume_after_a_kill_as_if_never_stopped(mask, tmp_path, stopper,
                                                                seconds):
    full = _batched(mask, _folder(tmp_path, "full"), (0, 1))
    folder = _folder(tmp_path, "stopped")
    with pytest.raises((KeyboardInterrupt, TrainingInterrupted)):
        _batched(mask, folder, (0, 1), observer=stopper(), checkpoint_seconds=seconds)
    for seed in (0, 1):  # each seed's checkpoint holds its first epoch
        assert load_model(folder / f"batched{seed}.h5").epoch == 1
    resumed = _batched(mask, folder, (0, 1), resume=True)
    _assert_same(resumed, full, exact=True)


@pytest.mark.parametrize("model", ["m2", "gmdgm", "gmdgm-mf", "adgm", "agm-dgm"])
def test_every_model_batches_with_its_noise_replayed(mask, tmp_path, model):
    # Gumbel and sampled KL: every kind of draw (z, a, Gumbel) comes from each seed's tape
    settings = {"epochs": 1, "y_estimator": "gumbel", "kl": "sampled"}
    alone = _alone(mask, tmp_path, (0, 1), model=model, **settings)
    batched = _batched(mask, tmp_path, (0, 1), model=model, **settings)
    _assert_same(batched, alone)


def test_the_topk_estimator_batches_with_its_draw_replayed(mask, tmp_path):
    settings = {"epochs": 1, "y_estimator": "topk", "y_topk": 2}
    alone = _alone(mask, tmp_path, (0, 1), model="gmdgm", **settings)
    batched = _batched(mask, tmp_path, (0, 1), model="gmdgm", **settings)
    _assert_same(batched, alone)


def test_runs_that_differ_in_more_than_the_seed_are_refused(mask, tmp_path):
    a, data_a = _setup(mask, tmp_path / "a.h5", 0)
    b, data_b = _setup(mask, tmp_path / "b.h5", 1, learning_rate=0.02)
    with pytest.raises(ConfigError, match="training settings"):
        fit_seeds([a, b], [data_a, data_b])
    c, data_c = _setup(mask, tmp_path / "c.h5", 2, labelled_share_cap=1.2)
    with pytest.raises(ConfigError, match="merge guard"):
        fit_seeds([a, c], [data_a, data_c])


@pytest.mark.parametrize("cap", [0.0, 1.2])  # 1.2: the merge guard, trained one by one
def test_train_seeds_leaves_each_checkpoint_as_susl_train_would(mask, tmp_path, monkeypatch,
                                                                 cap):
    from susl_cli import seed_batch

    batched: list[int] = []
    monkeypatch.setattr(seed_batch, "fit_seeds",
                        lambda runs, *a: batched.append(len(runs)) or fit_seeds(runs, *a))
    overrides = {"batch_size": 16, "labelled_batch_size": 8, "epochs": 1,
                 "learning_rate": 0.01, "labelled_share_cap": cap}
    jobs = [SeedJob(mask, tmp_path / f"s{seed}.h5", {**overrides, "seed": seed})
            for seed in (0, 1)]
    options = ModelOptions(extra_components=2, settings={"hidden_units": 16, "latent_dim": 2})
    runs = train_seeds(jobs, options=options, device="cpu")
    assert batched == ([2] if cap == 0 else [])
    for seed, run in zip((0, 1), runs, strict=True):
        stored = load_model(tmp_path / f"s{seed}.h5")
        assert stored.meta.seed == seed and stored.epoch == 1 and stored.meta.completed
        assert stored.meta.discovery is not None and run.meta.discovery == stored.meta.discovery
