"""ADGM and AGM-DGM (susl_cli/models/adgm.py, agm_dgm.py): the bound against an explicit
computation with the same a and z draws, the auxiliary terms, the deterministic classifier,
training, evaluation, prediction, sampling and resume through the CLI, and a tiny learning run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal, kl_divergence

from susl_cli import losses
from susl_cli.cli import app
from susl_cli.config import ModelConfig, ObjectiveConfig
from susl_cli.models import MODELS, Batch, GuardState, SuslModel, model_settings
from susl_cli.models.adgm import ADGM, ADGMSettings
from susl_cli.models.agm_dgm import AGMDGM
from susl_cli.runs import load_model
from susl_cli.share_guard import share_penalty
from tests.models.model_helpers import perturbed_model

DT = torch.float64
B, D, K, Z, A, H = 5, 10, 4, 3, 2, 16
PRIOR = (0.4, 0.3, 0.2, 0.1)
NAMES = ["adgm", "agm-dgm"]


def make_model(name: str, seed: int = 0, **objective) -> SuslModel:
    """A float64 model with parameters moved off the near-zero initial heads."""
    settings = model_settings(name, {"latent_dim": Z, "hidden_units": H, "aux_dim": A})
    config = ModelConfig(model=name, input_dim=D, n_components=K, n_labelled=2, prior=PRIOR,
                         settings=settings)
    return perturbed_model(config, ObjectiveConfig(**objective), seed)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _normal(mean: torch.Tensor, logvar: torch.Tensor) -> Normal:
    return Normal(mean, torch.exp(0.5 * logvar))


def explicit_inner(model, x, a, log_qa, labels, eps_z, kl: str) -> torch.Tensor:
    """log p(x|y,z) + log p(a|x,y,z) + log p(z|y) + log p(y) - log q(a|x) - log q(z|a,x,y)
    for labels (B,) at z = mean + sigma * eps_z (B, Z), written out with torch.distributions
    (the networks are the model's; the assembly is not). `kl` "analytic": the closed-form
    KL(q(z|.) || p(z|y)) in place of its one-sample estimate, as the model's option."""
    y = F.one_hot(labels, K).to(DT)  # (B, K)
    xa = torch.cat([x, a], -1)
    qz = _normal(*model.qz_head(model.qz_trunk(xa, y)))
    z = qz.loc + qz.scale * eps_z
    pz = _normal(*model.prior_z(y))
    log_px = Bernoulli(logits=model.decoder_output(z, y)).log_prob(x).sum(-1)
    log_pa = _normal(*model.pa(x, z, y)).log_prob(a).sum(-1)
    neg_kl_z = (pz.log_prob(z) - qz.log_prob(z)).sum(-1) if kl == "sampled" \
        else -kl_divergence(qz, pz).sum(-1)
    log_py = torch.log(torch.tensor(PRIOR, dtype=DT))[labels]
    return log_px + log_pa + neg_kl_z + log_py - log_qa


def draw_a(model, x, g):
    qa = _normal(*model.qa(x).chunk(2, -1))
    a = qa.loc + qa.scale * torch.randn((len(x), A), generator=g, dtype=DT)
    return a, qa.log_prob(a).sum(-1)


def explicit_loss(model, x_l, y_l, x_u, g, kl: str, alpha: float) -> dict[str, torch.Tensor]:
    """The labelled and the enumerated unlabelled bound, drawing a then z from `g` in the
    order the model does (labelled part first; one z per label setting, (B, K, Z))."""
    a_l, log_qa_l = draw_a(model, x_l, g)
    eps = torch.randn((B, 1, Z), generator=g, dtype=DT)[:, 0]
    elbo_l = explicit_inner(model, x_l, a_l, log_qa_l, y_l, eps, kl)
    log_qy_l = F.log_softmax(model.classifier(torch.cat([x_l, a_l], -1)), -1)[range(B), y_l]
    a_u, log_qa_u = draw_a(model, x_u, g)
    eps = torch.randn((B, K, Z), generator=g, dtype=DT)
    qy = F.softmax(model.classifier(torch.cat([x_u, a_u], -1)), -1)
    elbo_u = -(qy * qy.log()).sum(-1)
    for c in range(K):
        label = torch.full((B,), c)
        elbo_u = elbo_u + qy[:, c] * explicit_inner(model, x_u, a_u, log_qa_u, label,
                                                    eps[:, c], kl)
    loss = -(elbo_l + alpha * log_qy_l).mean() - elbo_u.mean()
    return {"loss": loss, "elbo_l": elbo_l.mean(), "elbo_u": elbo_u.mean()}


def _data(seed: int):
    g = _gen(seed)
    x = torch.bernoulli(torch.full((2 * B, D), 0.5, dtype=DT), generator=g)
    return x[:B], torch.randint(K, (B,), generator=g), x[B:]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kl", ["analytic", "sampled"])
def test_objective_equals_explicit_loop_over_y_with_the_same_a_and_z(name, kl) -> None:
    model = make_model(name, kl=kl, alpha=3.0)
    x_l, y_l, x_u = _data(1)
    out = model(Batch(x_l, y_l, x_u, _gen(2)))
    expected = explicit_loss(model, x_l, y_l, x_u, _gen(2), kl, alpha=3.0)
    for key, value in expected.items():
        torch.testing.assert_close(out.terms[key], value.detach(), msg=key)
    assert {"kl_a_u", "recon_u", "kl_z_u", "kl_y_u"} <= set(out.terms)


@pytest.mark.parametrize("name", NAMES)
def test_the_auxiliary_terms_are_in_the_bound(name) -> None:
    """elbo_u = recon - kl_z - kl_a - kl_y with kl_a = log q(a|x) - E_q(y|a,x) log p(a|.), a
    sizeable term here: a bound that dropped it would fail the explicit test above too."""
    model = make_model(name)
    _, _, x_u = _data(3)
    terms = model.unlabelled_terms(x_u, _gen(4))
    torch.testing.assert_close(terms["elbo"], terms["recon"] - terms["kl_z"] - terms["kl_a"]
                               - terms["kl_y"])
    assert terms["kl_a"].abs().min() > 1e-3
    a, _ = draw_a(model, x_u, _gen(4))  # the a of the bound is the a of q(y|a,x)
    torch.testing.assert_close(terms["qy_logits"], model.classifier(torch.cat([x_u, a], -1)))


@pytest.mark.parametrize("name", NAMES)
def test_marginal_kl_and_merge_guard_act_on_q_y_at_the_sampled_a(name) -> None:
    model = make_model(name, marginal_kl=0.7, labelled_share_cap=1.1)
    _, _, x_u = _data(9)
    # a tiny target for component 0: its sharpened share is over the cap whatever the init
    guard = GuardState(torch.tensor([2.0, 0.0], dtype=DT), torch.tensor([1e-4, 0.1], dtype=DT))
    out = model(Batch(x_unlabelled=x_u, generator=_gen(10), guard=guard))
    terms = model.unlabelled_terms(x_u, _gen(10))
    logits = terms["qy_logits"]
    expected = (-terms["elbo"].mean() + 0.7 * losses.marginal_kl(logits, model.log_prior)
                + share_penalty(logits, guard.multipliers, guard.targets, 1.1))
    torch.testing.assert_close(out.loss, expected)
    assert out.terms["share_penalty_u"] > 0 and out.terms["marginal_kl_u"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_gumbel_bound_is_the_inner_terms_at_the_sampled_label_plus_entropy(name) -> None:
    model = make_model(name, y_estimator="gumbel", kl="sampled")
    _, _, x_u = _data(5)
    got = model.unlabelled_terms(x_u, _gen(6))["elbo"]
    g = _gen(6)
    a, log_qa = draw_a(model, x_u, g)
    logits = model.classifier(torch.cat([x_u, a], -1))
    y = losses.gumbel_softmax_st(logits, 0.5, g).argmax(-1)
    eps = torch.randn((B, 1, Z), generator=g, dtype=DT)[:, 0]
    inner = explicit_inner(model, x_u, a, log_qa, y, eps, "sampled")
    torch.testing.assert_close(got, inner + losses.categorical_entropy(logits))


def test_registry_settings_and_the_auxiliary_density() -> None:
    assert MODELS["adgm"] is ADGM and MODELS["agm-dgm"] is AGMDGM
    assert ADGMSettings().aux_dim == 100  # the authors' code: n_a = 100
    assert model_settings("agm-dgm", {"aux_dim": "7"}).aux_dim == 7
    assert make_model("adgm").pa.y_layer is not None  # p(a|x,y,z)
    assert make_model("agm-dgm").pa.y_layer is None  # p(a|x,z), y only through p(z|y)


@pytest.mark.parametrize("name", NAMES)
def test_classifier_embed_and_sample_means_are_deterministic(name) -> None:
    model = make_model(name)
    x, _, _ = _data(7)
    mean_a = model.qa(x).chunk(2, -1)[0]
    logits = model.classifier_logits(x)
    torch.testing.assert_close(logits, model.classifier(torch.cat([x, mean_a], -1)))
    assert torch.equal(model.classifier_logits(x), logits)
    assert model.embed(x).shape == (B, Z) and torch.equal(model.embed(x), model.embed(x))
    means = model.sample_means(torch.arange(K), 3, _gen(8))
    assert means.shape == (3, K, D) and bool(((means >= 0) & (means <= 1)).all())


# -- through the CLI ---------------------------------------------------------------------------


def _train(runner, mask: Path, out: Path, name: str, *extra: str):
    return runner.invoke(app, ["train", str(mask), "--model", name, "--batch-size", "20",
                               "--labelled-batch-size", "10", "--extra-components", "4",
                               "--hidden-units", "16", "--latent-dim", "2",
                               "--model-option", "aux_dim=3", "--learning-rate", "0.01",
                               "--device", "cpu", "--quiet", "--out", str(out), *extra])


@pytest.mark.parametrize("name", NAMES)
def test_cli_trains_evaluates_predicts_samples_and_resumes(name, tiny_image_mask, tmp_path,
                                                          runner) -> None:
    run_path = tmp_path / "run.h5"
    result = _train(runner, tiny_image_mask, run_path, name, "--epochs", "2")
    assert result.exit_code == 0, result.output
    run = load_model(run_path)
    assert run.model.name == name and run.model_config.settings.aux_dim == 3
    assert all(math.isfinite(v) for v in run.history["kl_a_u"]) and len(run.history["loss"]) == 2

    result = runner.invoke(app, ["evaluate", str(run_path), "--json"])
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(result.stdout)["runs"][0]["metrics"]["cluster_acc_hungarian"] <= 1

    outputs = []
    for i in range(2):  # predict is reproducible: no random draw of a
        out = tmp_path / f"pred{i}.csv"
        result = runner.invoke(app, ["predict", str(run_path), str(tiny_image_mask),
                                     "--out", str(out)])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) >= 6

    result = runner.invoke(app, ["sample", str(run_path), "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").stat().st_size > 0

    # Resume (a warm restart of the finished run): the first epochs kept, the third added,
    # and the same on a copy (the auxiliary draws come from the seeded generator too).
    before = run.history["loss"]
    copy = tmp_path / "copy.h5"
    shutil.copyfile(run_path, copy)
    for path in (run_path, copy):
        result = _train(runner, tiny_image_mask, path, name, "--epochs", "3", "--resume")
        assert result.exit_code == 0, result.output
    resumed = load_model(run_path).history["loss"]
    assert resumed[:2] == before and len(resumed) == 3
    assert load_model(copy).history["loss"] == resumed


@pytest.mark.parametrize("name", NAMES)
def test_a_short_run_learns_the_labelled_classes(name, tiny_image_mask, tmp_path, runner) -> None:
    out = tmp_path / "learn.h5"
    result = _train(runner, tiny_image_mask, out, name, "--epochs", "8")
    assert result.exit_code == 0, result.output
    history = load_model(out).history
    assert history["loss"][-1] < history["loss"][0]
    result = runner.invoke(app, ["evaluate", str(out), "--json"])
    metrics = json.loads(result.stdout)["runs"][0]["metrics"]
    assert metrics["known_acc_classifier"] > 0.9, metrics  # chance: 1/6 components
