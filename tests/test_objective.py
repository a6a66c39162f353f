"""Tests of the training objective (paper eqs 6, 7, 11), the prior p(y) over labelled and extra
components, and the validation of ModelConfig and TrainConfig."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from susl_cli import losses
from susl_cli.config import ModelConfig, NetworkSettings, ObjectiveConfig, TrainConfig
from susl_cli.errors import ConfigError
from susl_cli.models import Batch, LossOutput, SuslModel, build_model
from susl_cli.objective import class_prior, default_extra_components, estimate_labelled_mass


def _with(model, **objective):
    """The model with its objective settings replaced (the model owns them)."""
    model.objective = ObjectiveConfig(**objective)
    return model


def labelled_elbo(model, x, y, kl, generator):
    return _with(model, kl=kl).labelled_elbo(x, y, generator)


def unlabelled_elbo(model, x, estimator, temperature, kl, generator):
    return _with(model, y_estimator=estimator, gumbel_temperature=temperature,
                 kl=kl).unlabelled_elbo(x, generator)


def training_loss(model, x_l, y_l, x_u, objective: ObjectiveConfig, generator):
    return _with(model, **dataclasses.asdict(objective))(Batch(x_l, y_l, x_u, generator))

DT = torch.float64
B, D, K, Z, H = 6, 10, 4, 3, 16
NAMES = ["m2", "gmdgm"]
PRIOR = (0.4, 0.3, 0.2, 0.1)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_model(name: str, seed: int = 0) -> SuslModel:
    """A float64 model with parameters moved off the near-zero initial heads."""
    config = ModelConfig(
        model=name,
        input_dim=D,
        n_components=K,
        n_labelled=2,
        settings=NetworkSettings(latent_dim=Z, hidden_units=H),
        prior=PRIOR,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(config)
        model.reset_parameters()
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.3 * torch.randn_like(param))
    return model.double()


def batch(seed: int = 0, n: int = B) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    x = torch.bernoulli(torch.full((n, D), 0.5, dtype=DT), generator=g)
    return x, torch.randint(K, (n,), generator=g)


@pytest.fixture
def z_at_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make q(z|x,y) sampling deterministic: z is its mean."""
    monkeypatch.setattr(losses, "sample_normal", lambda mean, logvar, generator, rows=None: mean)


# -- labelled and unlabelled ELBO ------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kl", ["analytic", "sampled"])
def test_labelled_elbo_is_recon_minus_kl_plus_log_py(name: str, kl: str) -> None:
    model = make_model(name)
    x, y = batch(1)
    got = labelled_elbo(model, x, y, kl, _gen(2))
    parts = model.elbo_terms(x.unsqueeze(1), F.one_hot(y, K).to(DT).unsqueeze(1), kl, _gen(2))
    for key in ("recon", "kl_z", "log_py"):
        assert got[key].shape == (B,)
        torch.testing.assert_close(got[key], parts[key].squeeze(1))
    torch.testing.assert_close(got["elbo"], got["recon"] - got["kl_z"] + got["log_py"])
    torch.testing.assert_close(got["log_py"], torch.log(torch.tensor(PRIOR, dtype=DT))[y])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kl", ["analytic", "sampled"])
def test_unlabelled_elbo_enumerate_equals_explicit_loop(name: str, kl: str, z_at_mean) -> None:
    """L_u(x) = sum_y q(y|x) L(x, y) + H[q(y|x)], and kl_y = KL(q(y|x) || p(y))."""
    model = make_model(name)
    x, _ = batch(3)
    got = unlabelled_elbo(model, x, "enumerate", 0.5, kl, None)
    qy = F.softmax(model.classifier_logits(x), -1)  # (B, K)
    expected = torch.zeros(B, dtype=DT)
    for c in range(K):
        expected += qy[:, c] * labelled_elbo(model, x, torch.full((B,), c), kl, None)["elbo"]
    expected += -(qy * qy.log()).sum(-1)
    log_prior = torch.log(torch.tensor(PRIOR, dtype=DT))
    kl_y = (qy * (qy.log() - log_prior)).sum(-1)
    assert got["elbo"].shape == (B,)
    torch.testing.assert_close(got["elbo"], expected)
    torch.testing.assert_close(got["kl_y"], kl_y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got["elbo"], got["recon"] - got["kl_z"] - got["kl_y"])


@pytest.mark.parametrize("name", NAMES)
def test_unlabelled_elbo_gumbel_is_labelled_elbo_at_the_sample_plus_entropy(
    name: str, z_at_mean
) -> None:
    model = make_model(name)
    x, _ = batch(4)
    got = unlabelled_elbo(model, x, "gumbel", 0.5, "analytic", _gen(5))
    logits = model.classifier_logits(x)
    sampled = losses.gumbel_softmax_st(logits, 0.5, _gen(5)).argmax(-1)  # same draws
    at_sample = labelled_elbo(model, x, sampled, "analytic", None)["elbo"]
    torch.testing.assert_close(got["elbo"], at_sample + losses.categorical_entropy(logits))


# -- the training loss -----------------------------------------------------------------------


@pytest.mark.parametrize("parts", ["both", "labelled only", "unlabelled only", "neither"])
@pytest.mark.parametrize("estimator", ["enumerate", "gumbel"])
def test_training_loss_is_negative_objective(parts: str, estimator: str, z_at_mean) -> None:
    model = make_model("gmdgm")
    config = ObjectiveConfig(alpha=3.0, y_estimator=estimator)
    x_l, y_l = batch(6, n=4) if parts in ("both", "labelled only") else (None, None)
    x_u, _ = batch(7) if parts in ("both", "unlabelled only") else (None, None)
    out = training_loss(model, x_l, y_l, x_u, config, _gen(8))
    assert isinstance(out, LossOutput) and out.loss.shape == ()

    objective = torch.zeros((), dtype=DT)
    if x_l is not None:
        log_qy = F.log_softmax(model.classifier_logits(x_l), -1)[torch.arange(4), y_l]
        elbo_l = labelled_elbo(model, x_l, y_l, "analytic", None)["elbo"]
        objective = objective + (elbo_l + 3.0 * log_qy).mean()
        torch.testing.assert_close(out.terms["ce_l"], -log_qy.mean().detach())
    if x_u is not None:  # z is the mean, so the generator's first draws are the Gumbel noise
        elbo_u = unlabelled_elbo(model, x_u, estimator, 0.5, "analytic", _gen(8))["elbo"]
        objective = objective + elbo_u.mean()
        torch.testing.assert_close(out.terms["elbo_u"], elbo_u.mean().detach())
    torch.testing.assert_close(out.loss.to(DT), -objective)
    torch.testing.assert_close(out.terms["loss"], out.loss.detach())
    assert all(not v.requires_grad for v in out.terms.values())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("estimator", ["enumerate", "gumbel", "topk"])
@pytest.mark.parametrize("kl", ["analytic", "sampled"])
def test_gradients_are_finite_and_reach_the_classifier(name: str, estimator: str, kl: str) -> None:
    model = make_model(name)
    x_l, y_l = batch(9, n=4)
    x_u, _ = batch(10)
    config = ObjectiveConfig(y_estimator=estimator, kl=kl)
    training_loss(model, x_l, y_l, x_u, config, _gen(11)).loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
    assert model.classifier.head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("estimator", ["enumerate", "gumbel", "topk"])
def test_unlabelled_loss_alone_trains_the_classifier(name: str, estimator: str) -> None:
    """The classifier gets a gradient from unlabelled data through E_q(y|x) (and H[q])."""
    model = make_model(name)
    config = ObjectiveConfig(y_estimator=estimator)
    training_loss(model, None, None, batch(12)[0], config, _gen(13)).loss.backward()
    grad = model.classifier.head.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# -- the prior p(y) --------------------------------------------------------------------------


def test_class_prior_sus_paper_setting() -> None:
    """Half the mass on 5 equal labelled classes, half on 40 extras: 1/(2 n_l), 1/(2 n_aug)."""
    prior = class_prior(np.full(5, 1200), 40, 0.5)
    assert len(prior) == 45
    assert sum(prior) == pytest.approx(1.0)
    np.testing.assert_allclose(prior[:5], 0.1)
    np.testing.assert_allclose(prior[5:], 0.0125)


def test_class_prior_follows_unequal_labelled_counts() -> None:
    counts = np.array([10, 30, 60])
    prior = np.array(class_prior(counts, 4, 0.6))
    assert prior.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(prior[:3], 0.6 * counts / counts.sum())
    np.testing.assert_allclose(prior[3:], 0.1)


def test_class_prior_semi_supervised_is_label_frequency() -> None:
    counts = np.array([5, 15, 20, 10])
    prior = class_prior(counts, 0, None)
    np.testing.assert_allclose(prior, counts / counts.sum())
    assert sum(prior) == pytest.approx(1.0)


def test_class_prior_unsupervised_is_uniform() -> None:
    prior = class_prior(np.array([], dtype=int), 7, None)
    np.testing.assert_allclose(prior, 1 / 7)
    assert sum(prior) == pytest.approx(1.0)


@pytest.mark.parametrize("mass", [None, 0.0, 1.0, -0.2, 1.5, float("nan")])
def test_class_prior_rejects_invalid_labelled_mass(mass: float | None) -> None:
    with pytest.raises(ConfigError, match="labelled-mass"):
        class_prior(np.array([3, 3]), 5, mass)


def test_class_prior_with_no_components_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="extra-components"):
        class_prior(np.array([], dtype=int), 0, None)


def test_class_prior_is_a_valid_model_prior() -> None:
    prior = class_prior(np.array([1100, 1300, 1200, 1250, 1269]), 40, 0.51)
    config = ModelConfig(n_components=45, n_labelled=5, prior=prior)
    assert config.prior == prior


def test_estimate_labelled_mass_with_label_fraction() -> None:
    counts = np.array([1185, 1348, 1192, 1226, 1168])  # sums to 6119: 20% of MNIST's 0-4
    assert counts.sum() == 6119
    mass = estimate_labelled_mass(counts, 0.2, 60000, 10)
    assert mass == pytest.approx(6119 / 0.2 / 60000)
    assert mass == pytest.approx(0.51, abs=0.005)


@pytest.mark.parametrize("fraction", [None, 0.0])
def test_estimate_labelled_mass_without_fraction_assumes_equal_classes(
    fraction: float | None,
) -> None:
    assert estimate_labelled_mass(np.array([5, 9, 1]), fraction, 600, 6) == pytest.approx(0.5)


def test_estimate_labelled_mass_is_clipped_inside_the_unit_interval() -> None:
    assert estimate_labelled_mass(np.array([900, 900]), 0.1, 1000, 10) == pytest.approx(0.99)
    assert estimate_labelled_mass(np.array([1]), 0.5, 10_000, 10) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("n_labelled", "n_classes", "extra"), [(5, 10, 40), (0, 10, 40), (3, 6, 40), (10, 10, 0)]
)
def test_default_extra_components(n_labelled: int, n_classes: int, extra: int) -> None:
    assert default_extra_components(n_labelled, n_classes) == extra


# -- configuration validation ----------------------------------------------------------------


def test_default_configs_are_valid() -> None:
    ModelConfig()
    TrainConfig()


@pytest.mark.parametrize("field", ["input_dim", "n_components", "latent_dim", "hidden_units"])
@pytest.mark.parametrize("value", [0, -3, 2.5])
def test_model_config_rejects_non_positive_sizes(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        if field in ("latent_dim", "hidden_units"):  # the models' shared settings
            NetworkSettings(**{field: value})
        else:
            ModelConfig(**{field: value})


@pytest.mark.parametrize(
    "overrides",
    [
        {"n_components": 4, "n_labelled": 5},  # K smaller than the labelled classes
        {"n_labelled": -1},
        {"likelihood": "poisson"},
        {"gaussian_sigma": 0.0},
        {"gaussian_sigma": float("nan")},
        {"gaussian_sigma": 1e-30},  # squared errors / sigma^2 overflow float32 (measured: NaN)
        {"gaussian_sigma": float("inf")},
        {"init": "kaiming"},
        {"n_components": 3, "prior": (0.5, 0.5)},  # wrong length
        {"n_components": 3, "prior": (0.5, 0.5, 0.0)},  # not positive
        {"n_components": 3, "prior": (0.5, 0.3, 0.3)},  # does not sum to 1
    ],
)
def test_model_config_rejects_impossible_values(overrides: dict) -> None:
    with pytest.raises(ConfigError):
        ModelConfig(**overrides)


def test_model_config_names_the_fix_for_too_few_components() -> None:
    with pytest.raises(ConfigError, match="4 components cannot hold 5 labelled.*extra-comp"):
        ModelConfig(n_components=4, n_labelled=5)


@pytest.mark.parametrize(
    "field", ["epochs", "batch_size", "labelled_batch_size", "checkpoint_every"]
)
@pytest.mark.parametrize("value", [0, -1])
def test_train_config_rejects_non_positive_counts(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        TrainConfig(**{field: value})


@pytest.mark.parametrize(
    "overrides",
    [
        {"learning_rate": 0.0},
        {"learning_rate": -1e-3},
        {"gumbel_temperature": 0.0},
        {"alpha": -1.0},
        {"alpha": float("nan")},
        {"grad_clip": -0.5},
        {"weight_decay": float("inf")},
        {"y_estimator": "reinforce"},
        {"kl": "exact"},
        {"lr_schedule": "step"},
    ],
)
def test_train_config_rejects_impossible_values(overrides: dict) -> None:
    from susl_cli.config import split_settings

    with pytest.raises(ConfigError):
        split_settings(overrides)


def test_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ObjectiveConfig().alpha = 1.0  # type: ignore[misc]


def test_marginal_kl_is_kl_of_the_batch_mean_posterior() -> None:
    from susl_cli.losses import marginal_kl

    torch.manual_seed(0)
    logits = torch.randn(7, 4)
    prior = torch.tensor([0.4, 0.3, 0.2, 0.1])
    q_bar = torch.softmax(logits, -1).mean(0)
    expected = (q_bar * (q_bar / prior).log()).sum()
    assert torch.allclose(marginal_kl(logits, prior.log()), expected, atol=1e-6)
    # Zero exactly when the batch's share per component is the prior's.
    matched = prior.log().expand(5, 4)
    assert abs(float(marginal_kl(matched, prior.log()))) < 1e-6


def test_marginal_kl_weight_adds_to_the_loss() -> None:
    model = build_model(ModelConfig(input_dim=6, n_components=3, n_labelled=1,
                                    settings=NetworkSettings(latent_dim=2, hidden_units=8)))
    model.reset_parameters()
    x = torch.rand(5, 6)
    plain = training_loss(model, None, None, x, ObjectiveConfig(),
                          torch.Generator().manual_seed(0))
    extra = training_loss(model, None, None, x, ObjectiveConfig(marginal_kl=2.0),
                          torch.Generator().manual_seed(0))
    assert torch.allclose(extra.loss, plain.loss + 2.0 * extra.terms["marginal_kl_u"])
