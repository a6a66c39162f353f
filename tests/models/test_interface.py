"""The model interface: model(Batch) -> LossOutput, the registry and its settings dataclasses,
the objective split from the optimiser settings, and what that change must not move (the
numbers, old checkpoints, the history's term names)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from susl_cli import losses
from susl_cli.cli import app
from susl_cli.config import ModelConfig, NetworkSettings, ObjectiveConfig, TrainConfig
from susl_cli.errors import ConfigError
from susl_cli.models import (
    MODELS,
    Batch,
    GuardState,
    LossOutput,
    SuslModel,
    build_model,
    model_config_from_dict,
    model_config_to_dict,
    model_label,
    model_settings,
    model_title,
)
from susl_cli.models.gmdgm import GMDGM
from susl_cli.runs import ModelOptions, load_model, new_run
from susl_cli.share_guard import share_penalty
from susl_cli.storage.checkpoint import read_checkpoint, write_checkpoint
from susl_cli.storage.masked import read_masked_dataset
from susl_cli.train import (
    EPOCH_SEED_STRIDE,
    batch_indices,
    fit,
    maybe_binarise,
    prepare_data,
    scheduled_lr,
    train_mask_file,
)

K, D = 4, 10
PRIOR = (0.4, 0.3, 0.2, 0.1)


def _model(name: str, **objective) -> SuslModel:
    config = ModelConfig(model=name, input_dim=D, n_components=K, n_labelled=2, prior=PRIOR,
                         settings=NetworkSettings(latent_dim=3, hidden_units=16))
    model = build_model(config, ObjectiveConfig(**objective))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model.reset_parameters()
        for p in model.parameters():  # off the near-zero initial heads
            p.data.add_(0.3 * torch.randn_like(p))
    return model.double()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def old_training_loss(model, x_l, y_l, x_u, cfg: ObjectiveConfig, generator, guard=None):
    """The objective as the trainer assembled it before the model owned it (objective.py's
    training_loss), written out from the model's ELBO terms and losses.py."""
    loss = torch.zeros((), device=model.log_prior.device)
    terms = {}
    if x_l is not None:
        onehot = F.one_hot(y_l, model.config.n_components).to(x_l.dtype).unsqueeze(1)
        t = model.elbo_terms(x_l.unsqueeze(1), onehot, cfg.kl, generator)
        elbo_l = (t["recon"] - t["kl_z"] + t["log_py"]).squeeze(1)
        log_qy = -F.cross_entropy(model.classifier_logits(x_l), y_l, reduction="none")
        loss = loss - (elbo_l + cfg.alpha * log_qy).mean()
        terms.update(elbo_l=elbo_l.mean(), ce_l=-log_qy.mean())
    if x_u is not None:
        logits = model.classifier_logits(x_u)
        x3 = x_u.unsqueeze(1)
        t = losses.expectation_over_y(lambda y: model.elbo_terms(x3, y, cfg.kl, generator),
                                      logits, cfg.y_estimator, cfg.gumbel_temperature,
                                      generator)
        kl_y = -(t["log_py"] + losses.categorical_entropy(logits))
        elbo_u = t["recon"] - t["kl_z"] - kl_y
        loss = loss - elbo_u.mean()
        if cfg.marginal_kl:
            terms["marginal_kl_u"] = losses.marginal_kl(logits, model.log_prior)
            loss = loss + cfg.marginal_kl * terms["marginal_kl_u"]
        if guard is not None:
            terms["share_penalty_u"] = share_penalty(logits, guard.multipliers, guard.targets,
                                                     cfg.labelled_share_cap)
            loss = loss + terms["share_penalty_u"]
        terms.update(elbo_u=elbo_u.mean(), recon_u=t["recon"].mean(), kl_z_u=t["kl_z"].mean(),
                     kl_y_u=kl_y.mean())
    terms["loss"] = loss
    return loss, terms


@pytest.mark.parametrize("name", ["m2", "gmdgm"])
@pytest.mark.parametrize(("estimator", "kl"), [("enumerate", "analytic"),
                                               ("enumerate", "sampled"),
                                               ("gumbel", "analytic")])
@pytest.mark.parametrize("parts", ["both", "labelled", "unlabelled"])
def test_model_call_equals_the_old_objective(name, estimator, kl, parts) -> None:
    cfg = ObjectiveConfig(alpha=2.0, y_estimator=estimator, kl=kl, marginal_kl=0.7,
                          labelled_share_cap=1.1)
    model = _model(name, **dataclasses.asdict(cfg))
    rng = torch.Generator().manual_seed(1)
    x_l = torch.rand(5, D, generator=rng, dtype=torch.float64) if parts != "unlabelled" else None
    y_l = torch.tensor([0, 1, 1, 0, 1]) if x_l is not None else None
    x_u = torch.rand(7, D, generator=rng, dtype=torch.float64) if parts != "labelled" else None
    guard = GuardState(torch.tensor([2.0, 0.0], dtype=torch.float64),
                       torch.tensor([0.05, 0.1], dtype=torch.float64))
    out = model(Batch(x_l, y_l, x_u, _gen(3), guard))
    assert isinstance(out, LossOutput)
    loss, terms = old_training_loss(model, x_l, y_l, x_u, cfg, _gen(3), guard)
    assert torch.equal(out.loss, loss)  # same operations in the same order: bit for bit
    assert list(out.terms) == list(terms)  # the history's column names and order
    for key, value in terms.items():
        assert torch.equal(out.terms[key], value.detach()), key
        assert not out.terms[key].requires_grad
    grads = torch.autograd.grad(out.loss, list(model.parameters()), allow_unused=True)
    old = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    for mine, before in zip(grads, old, strict=True):
        assert (mine is None and before is None) or torch.equal(mine, before)


OPTIONS = ModelOptions(model="gmdgm", extra_components=2,
                       settings={"hidden_units": 16, "latent_dim": 2})


@pytest.mark.parametrize("estimator", ["enumerate", "gumbel"])
def test_two_epochs_of_fit_equal_the_old_training_loop(blob_mask, tmp_path, estimator) -> None:
    """fit() without an output file, against the loop as written before (old_training_loss
    on the same seeded batches): the same losses each epoch and the same weights after."""
    masked = read_masked_dataset(blob_mask)
    train = TrainConfig(epochs=2, batch_size=16, labelled_batch_size=8, seed=5)
    cfg = ObjectiveConfig(y_estimator=estimator, marginal_kl=0.5)
    cpu = torch.device("cpu")
    run = new_run(masked, blob_mask, OPTIONS, train, cpu, cfg)
    data = prepare_data(run, masked.x_train, masked.y_observed, cpu)
    before = sorted(p.name for p in tmp_path.iterdir())
    fit(run, data)  # no output path: nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == before and run.epoch == 2

    old = new_run(masked, blob_mask, OPTIONS, train, cpu, cfg)
    old.model.train()
    for epoch in range(2):
        generator = _gen(train.seed * EPOCH_SEED_STRIDE + epoch)
        for group in old.optimizer.param_groups:
            group["lr"] = scheduled_lr(train, epoch)
        batches = batch_indices(data, train.batch_size, train.labelled_batch_size, generator,
                                cpu)
        sums = None
        for idx_u, idx_l in zip(*batches, strict=True):
            x_u = maybe_binarise(data.x_unlabelled[idx_u], data.binarise, generator)
            x_l = maybe_binarise(data.x_labelled[idx_l], data.binarise, generator)
            loss, terms = old_training_loss(old.model, x_l, data.y_labelled[idx_l], x_u, cfg,
                                            generator)
            old.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            old.optimizer.step()
            stacked = torch.stack([v.detach() for v in terms.values()])
            sums = stacked if sums is None else sums + stacked
        means = dict(zip(terms, [v / len(batches[0]) for v in sums.tolist()], strict=True))
        for key, value in means.items():
            assert run.history[key][epoch] == value, (key, epoch)
    for mine, before in zip(run.model.parameters(), old.model.parameters(), strict=True):
        assert torch.equal(mine, before)


def _old_format(checkpoint: Path, out: Path) -> None:
    """Rewrite a checkpoint as files were before the split: one flat train_config holding the
    objective's fields too, no objective_config."""
    data = read_checkpoint(checkpoint, with_optimizer=True)
    meta = dict(data.meta)
    meta["train_config"] = {**meta["train_config"], **meta.pop("objective_config")}
    write_checkpoint(out, dataclasses.replace(data, meta=meta))


def test_a_checkpoint_of_the_flat_format_loads_and_resumes(blob_mask, tmp_path) -> None:
    new = tmp_path / "new.h5"
    train_mask_file(blob_mask, new, options=OPTIONS, train_overrides={
        "epochs": 2, "seed": 1, "batch_size": 16, "labelled_batch_size": 8, "alpha": 2.0,
        "marginal_kl": 0.5, "y_estimator": "gumbel",
        "label_evidence": 0.0})  # the flat format predates it: an old run never had it
    old = tmp_path / "old.h5"
    _old_format(new, old)
    assert "objective_config" not in read_checkpoint(old).meta
    run = load_model(old)
    assert run.model.objective == ObjectiveConfig(alpha=2.0, marginal_kl=0.5,
                                                  y_estimator="gumbel")
    assert run.train_config.epochs == 2 and run.train_config.batch_size == 16
    assert run.model_config.settings == model_settings("gmdgm", OPTIONS.settings)
    resumed = train_mask_file(blob_mask, old, options=ModelOptions(),
                              train_overrides={"epochs": 3}, resume=True)
    extended = train_mask_file(blob_mask, new, options=ModelOptions(),
                               train_overrides={"epochs": 3}, resume=True)
    assert resumed.history["loss"] == extended.history["loss"]
    assert "objective_config" in read_checkpoint(old).meta  # written in the new layout now


# -- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ToySettings(NetworkSettings):
    depth_scale: float = 1.0  # a setting only this model has


class Toy(SuslModel):
    """A model outside the q(y|x) q(z|x,y) family: q(y|x) trained by cross-entropy on labels
    and entropy minimisation on unlabelled points (no latent variable at all)."""

    name = "toy"
    description = "toy classifier"
    settings_class = ToySettings

    def __init__(self, config: ModelConfig, objective: ObjectiveConfig | None = None) -> None:
        super().__init__(config, objective)
        self.net = nn.Linear(config.input_dim, config.n_components)

    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.settings.depth_scale

    def forward(self, batch: Batch) -> LossOutput:
        loss = torch.zeros(())
        if batch.x_labelled is not None:
            loss = loss + F.cross_entropy(self.classifier_logits(batch.x_labelled),
                                          batch.y_labelled)
        if batch.x_unlabelled is not None:
            logits = self.classifier_logits(batch.x_unlabelled)
            loss = loss + losses.categorical_entropy(logits).mean()
        return LossOutput(loss, {"loss": loss.detach()})

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, : self.config.latent_dim]


def test_a_registered_model_trains_through_the_cli_and_loads(blob_mask, tmp_path, runner,
                                                             monkeypatch) -> None:
    monkeypatch.setitem(MODELS, "toy", Toy)
    out = tmp_path / "toy.h5"
    result = runner.invoke(app, ["train", str(blob_mask), "--model", "toy", "--epochs", "2",
                                 "--batch-size", "16", "--model-option", "depth_scale=0.5",
                                 "--latent-dim", "2", "--device", "cpu", "--quiet",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    run = load_model(out)
    assert isinstance(run.model, Toy)
    assert run.model_config.settings == ToySettings(latent_dim=2, depth_scale=0.5)
    assert len(run.history["loss"]) == 2 and all(map(math.isfinite, run.history["loss"]))
    assert runner.invoke(app, ["evaluate", str(out)]).exit_code == 0
    bad = runner.invoke(app, ["train", str(blob_mask), "--model", "toy", "--model-option",
                              "aux_dim=3", "--out", str(tmp_path / "bad.h5")])
    assert bad.exit_code != 0 and "no setting 'aux_dim'" in bad.stderr
    assert "depth_scale" in bad.stderr and "Traceback" not in bad.output


def test_titles_come_from_the_registered_classes_and_a_new_model_needs_no_other_edit(
        monkeypatch) -> None:
    for name, cls in MODELS.items():  # each declares its own, and no two are alike
        assert cls.__dict__.get("title") and model_title(name) == cls.__dict__["title"], name
    assert len({model_title(name) for name in MODELS}) == len(MODELS)
    assert {name: model_title(name) for name in ("m2", "gmdgm", "gmdgm-mf", "adgm",
                                                 "agm-dgm")} == {
        "m2": "M2 (SSVAE)", "gmdgm": "GM-DGM", "gmdgm-mf": "GM-DGM (mean-field)",
        "adgm": "ADGM", "agm-dgm": "AGM-DGM"}
    assert model_label("gmdgm-mf") == "gmdgm-mf: GM-DGM (mean-field)"

    titled = type("Titled", (Toy,), {"name": "titled", "title": "Toy classifier"})
    untitled = type("Untitled", (GMDGM,), {"name": "untitled"})  # GM-DGM's title: not its own
    for name, cls in (("toy", Toy), ("titled", titled), ("untitled", untitled)):
        monkeypatch.setitem(MODELS, name, cls)
    assert model_title("titled") == "Toy classifier"
    assert model_label("titled") == "titled: Toy classifier"
    for bare in ("toy", "untitled", "a-model-of-another-version"):
        assert model_title(bare) == model_label(bare) == bare


def test_model_options_are_checked_against_the_settings_dataclass() -> None:
    assert model_settings("m2", {"latent_dim": "7"}).latent_dim == 7  # text from the CLI
    for bad in ({"latent_dim": "seven"}, {"latent_dim": 2.5}, {"latent_dim": 0}):
        with pytest.raises(ConfigError):
            model_settings("gmdgm", bad)
    with pytest.raises(ConfigError, match="choose from latent_dim, hidden_units"):
        model_settings("m2", {"aux_dim": 3})


def test_model_config_is_stored_flat_as_before() -> None:
    config = ModelConfig(model="m2", settings=model_settings("m2", {"latent_dim": 4}))
    flat = model_config_to_dict(config)
    assert flat["latent_dim"] == 4 and "settings" not in flat
    assert model_config_from_dict(flat) == config


def test_a_python_caller_of_fit_gets_no_cpu_tuning(blob_mask, monkeypatch) -> None:
    import ctypes

    def refuse(*args, **kwargs) -> None:
        raise AssertionError("fit() changed process-wide CPU settings")

    monkeypatch.setattr(torch, "set_flush_denormal", refuse)
    monkeypatch.setattr(ctypes, "CDLL", refuse)
    masked = read_masked_dataset(blob_mask)
    cpu = torch.device("cpu")
    run = new_run(masked, blob_mask, OPTIONS, TrainConfig(epochs=1, batch_size=32), cpu)
    fit(run, prepare_data(run, masked.x_train, masked.y_observed, cpu))
    assert run.epoch == 1 and len(run.history["loss"]) == 1
