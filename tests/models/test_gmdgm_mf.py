"""gmdgm-mf, GM-DGM with the mean-field posterior q(y|x) q(z|x): its ELBO terms against closed
forms and an explicit loop over y, the shared objective's terms and names, sampling and
embedding, and the model through the registry and the CLI (train, resume, evaluate, predict,
sample, discover)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from susl_cli import losses
from susl_cli.cli import app
from susl_cli.config import ModelConfig, NetworkSettings, ObjectiveConfig
from susl_cli.experiment import ExperimentConfig, parse_names, plan_experiment
from susl_cli.models import MODELS, Batch, GuardState
from susl_cli.models.gmdgm_mf import GMDGMMeanField
from susl_cli.runs import ModelOptions, load_model
from susl_cli.storage.masked import read_masked_dataset
from susl_cli.train import SilentObserver, TrainingInterrupted, train_mask_file
from tests.models.model_helpers import perturbed_model

DT = torch.float64
B, D, K, Z, H = 6, 10, 4, 3, 16
PRIOR = (0.4, 0.3, 0.2, 0.1)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_model(name: str = "gmdgm-mf", **objective) -> GMDGMMeanField:
    """A float64 model with parameters moved off the near-zero initial heads."""
    config = ModelConfig(model=name, input_dim=D, n_components=K, n_labelled=2, prior=PRIOR,
                         settings=NetworkSettings(latent_dim=Z, hidden_units=H))
    return perturbed_model(config, ObjectiveConfig(**objective))


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    x = torch.bernoulli(torch.full((B, D), 0.5, dtype=DT), generator=g)
    return x, torch.randint(K, (B,), generator=g)


def by_hand(model: GMDGMMeanField, x: torch.Tensor, y: int, kl: str, seed: int) -> torch.Tensor:
    """L(x, y) from torch.distributions at z = mean + sd * eps, eps the seed's first draw."""
    mean, logvar = model.qz_encoder(x).chunk(2, dim=-1)
    q = Normal(mean, torch.exp(0.5 * logvar))
    z = mean + q.stddev * torch.randn(mean.shape, generator=_gen(seed), dtype=DT)
    p = Normal(model.component_mean[y], torch.exp(0.5 * model.component_logvar[y]))
    recon = Bernoulli(logits=model.decoder(z)).log_prob(x).sum(-1)
    if kl == "analytic":
        kl_z = kl_divergence(q, p).sum(-1)
    else:
        kl_z = (q.log_prob(z) - p.log_prob(z)).sum(-1)
    return recon - kl_z + math.log(PRIOR[y])


# -- the ELBO --------------------------------------------------------------------------------


@pytest.mark.parametrize("kl", ["analytic", "sampled"])
def test_labelled_elbo_against_closed_forms(kl: str) -> None:
    model = make_model(kl=kl)
    x, y = batch(1)
    got = model.labelled_elbo(x, y, _gen(3))
    for c in range(K):  # by hand for label c at the same z, compared on the rows labelled c
        rows = y == c
        torch.testing.assert_close(got["elbo"][rows], by_hand(model, x, c, kl, 3)[rows])
    torch.testing.assert_close(got["elbo"], got["recon"] - got["kl_z"] + got["log_py"])


@pytest.mark.parametrize("kl", ["analytic", "sampled"])
def test_unlabelled_elbo_equals_an_explicit_loop_over_y_with_one_shared_z(kl: str) -> None:
    model = make_model(kl=kl)
    x, _ = batch(2)
    got = model.unlabelled_elbo(x, _gen(5))
    qy = torch.softmax(model.classifier_logits(x), -1)
    expected = -(qy * qy.log()).sum(-1)  # H[q(y|x)]
    for c in range(K):  # the same eps (seed 5) for every y: one z, one decoder pass
        expected = expected + qy[:, c] * by_hand(model, x, c, kl, 5)
    torch.testing.assert_close(got["elbo"], expected)
    kl_y = (qy * (qy.log() - torch.tensor(PRIOR, dtype=DT).log())).sum(-1)
    torch.testing.assert_close(got["kl_y"], kl_y)
    torch.testing.assert_close(got["elbo"], got["recon"] - got["kl_z"] - got["kl_y"])


def test_the_sum_over_y_is_exact_whatever_the_y_estimator() -> None:
    x, _ = batch(3)
    exact = make_model(y_estimator="enumerate").unlabelled_elbo(x, _gen(7))
    gumbel = make_model(y_estimator="gumbel", gumbel_temperature=0.3).unlabelled_elbo(x, _gen(7))
    for name in exact:
        torch.testing.assert_close(gumbel[name], exact[name])


def test_one_decoder_pass_per_point(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model()
    rows = []
    decoder = model.decoder.forward
    monkeypatch.setattr(model.decoder, "forward", lambda z: rows.append(len(z)) or decoder(z))
    x, y = batch(4)
    model(Batch(x, y, x, _gen(0)))
    assert rows == [B, B]  # the labelled and the unlabelled batch, once each


# -- the shared objective --------------------------------------------------------------------


def test_objective_terms_and_names_match_gmdgm() -> None:
    x_l, y_l = batch(5)
    x_u, _ = batch(6)
    guard = GuardState(torch.full((2,), 0.5, dtype=DT), torch.full((2,), 0.3, dtype=DT))
    mf = make_model(alpha=2.0, marginal_kl=0.7)
    out = mf(Batch(x_l, y_l, x_u, _gen(1), guard))
    reference = make_model("gmdgm", alpha=2.0, marginal_kl=0.7)(Batch(x_l, y_l, x_u, _gen(1),
                                                                        guard))
    assert set(out.terms) == set(reference.terms)
    log_qy = torch.log_softmax(mf.classifier_logits(x_l), -1).gather(1, y_l[:, None])[:, 0]
    g = _gen(1)  # the labelled part draws first, then the unlabelled part
    lab, unl = mf.labelled_elbo(x_l, y_l, g), mf.unlabelled_elbo(x_u, g)
    expected = (-(lab["elbo"] + 2.0 * log_qy).mean() - unl["elbo"].mean()
                + out.terms["marginal_kl_u"] * 0.7 + out.terms["share_penalty_u"])
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.terms["kl_z_u"], unl["kl_z"].mean())
    assert out.terms["share_penalty_u"] > 0


def test_embed_and_sample_means() -> None:
    model = make_model()
    x, _ = batch(8)
    torch.testing.assert_close(model.embed(x), model.qz_encoder(x)[:, :Z])
    components = torch.tensor([0, 3])
    means = model.sample_means(components, 5, _gen(9))
    assert means.shape == (5, 2, D) and bool(((means > 0) & (means < 1)).all())
    eps = torch.randn((5, 1, Z), generator=_gen(9), dtype=DT)
    z = model.component_mean[components] + torch.exp(0.5 * model.component_logvar[components]) * eps
    torch.testing.assert_close(means, torch.sigmoid(model.decoder(z)))


def test_registered_without_a_q_z_given_x_y_network() -> None:
    assert MODELS["gmdgm-mf"] is GMDGMMeanField
    names = [name for name, _ in make_model().named_parameters()]
    assert any(n.startswith("qz_encoder.") for n in names)
    assert not any(n.startswith("qz_trunk.") or n.startswith("qz_head.") for n in names)


def test_z_is_drawn_once_per_point(monkeypatch: pytest.MonkeyPatch) -> None:
    shapes = []
    draw = losses.sample_normal
    monkeypatch.setattr(losses, "sample_normal",
                        lambda m, lv, g, *rest: shapes.append(tuple(m.shape))
                        or draw(m, lv, g, *rest))
    make_model().unlabelled_elbo(batch(0)[0], _gen(0))
    assert shapes == [(B, Z)]


# -- learning and the CLI --------------------------------------------------------------------


TRAIN = ["--model", "gmdgm-mf", "--batch-size", "20", "--labelled-batch-size", "10",
         "--extra-components", "4", "--hidden-units", "16", "--latent-dim", "2",
         "--learning-rate", "0.01", "--quiet", "--device", "cpu"]


def test_learns_the_labelled_classes(tiny_image_mask, tmp_path, runner):
    out = tmp_path / "run.h5"
    result = runner.invoke(app, ["train", str(tiny_image_mask), *TRAIN, "--epochs", "8",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    run = load_model(out)
    assert isinstance(run.model, GMDGMMeanField) and run.model_config.model == "gmdgm-mf"
    loss = run.history["loss"]
    assert len(loss) == 8 and all(map(math.isfinite, loss)) and loss[-1] < loss[0]
    masked = read_masked_dataset(tiny_image_mask)
    data = {"x_test": masked.x_test, "y_test": masked.y_test}
    known = data["y_test"] < 2  # components 0 and 1 are tied to the labelled classes 0 and 1
    x = torch.from_numpy(run.transform.apply(data["x_test"][known]))
    with torch.no_grad():
        predicted = run.model.classifier_logits(x).argmax(-1).numpy()
    assert float(np.mean(predicted == data["y_test"][known])) > 0.9


def test_save_load_and_resume_through_the_cli(tiny_image_mask, tmp_path, runner):
    full, part = tmp_path / "full.h5", tmp_path / "part.h5"
    train = ["train", str(tiny_image_mask), *TRAIN, "--epochs", "4"]
    assert runner.invoke(app, [*train, "--out", str(full)]).exit_code == 0

    class CtrlCAtEpoch3(SilentObserver):
        def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
            if epoch == 3:
                raise KeyboardInterrupt

    options = ModelOptions(model="gmdgm-mf", extra_components=4,
                           settings={"hidden_units": 16, "latent_dim": 2})
    overrides = {"epochs": 4, "batch_size": 20, "labelled_batch_size": 10,
                 "learning_rate": 0.01}
    with pytest.raises(TrainingInterrupted, match="2 finished epochs"):
        train_mask_file(tiny_image_mask, part, options=options, train_overrides=overrides,
                        device="cpu", observer=CtrlCAtEpoch3())
    assert load_model(part).epoch == 2
    result = runner.invoke(app, [*train, "--out", str(part), "--resume"])
    assert result.exit_code == 0, result.output
    a, b = load_model(full), load_model(part)
    assert a.epoch == b.epoch == 4 and isinstance(b.model, GMDGMMeanField)
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key
    x = torch.rand(5, a.model_config.input_dim, generator=_gen(0))
    torch.testing.assert_close(a.model.classifier_logits(x), b.model.classifier_logits(x))


def test_every_analysis_command_runs_on_a_gmdgm_mf_checkpoint(tiny_image_mask, tmp_path, runner):
    run = tmp_path / "run.h5"
    assert runner.invoke(app, ["train", str(tiny_image_mask), *TRAIN, "--epochs", "2",
                               "--out", str(run)]).exit_code == 0
    commands = [["sample", str(run), "--out", str(tmp_path / "s.png")],
                ["discover", str(run), "--method", "latent"],
                ["discover", str(run), "--method", "overlap"],
                ["predict", str(run), str(tiny_image_mask), "--out", str(tmp_path / "p.csv")],
                ["evaluate", str(run), "--tsne", str(tmp_path / "t.png")]]
    for args in commands:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    shown = runner.invoke(app, ["info", str(run)], env={"COLUMNS": "200"}).stdout
    assert "gmdgm-mf: GM-DGM (mean-field)" in shown  # the id --model takes, and its title


def test_experiment_grids_accept_the_model(tmp_path) -> None:
    models = parse_names("gmdgm, GMDGM-MF", dash="-")
    plan = plan_experiment(ExperimentConfig("table2", "mnist", tmp_path, seeds=1, models=models,
                                            regimes=("sus",)), 10)
    assert sorted({run.model for run in plan.runs}) == ["gmdgm", "gmdgm-mf"]
