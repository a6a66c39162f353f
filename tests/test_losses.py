"""Unit tests of susl_cli.losses: log-densities and KL terms against torch.distributions and
closed forms, the straight-through Gumbel-softmax sampler, and the one helper that sums out
(or samples) the unknown label, checked against an explicit loop over y."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch.distributions import Bernoulli, Categorical, Normal, kl_divergence

from susl_cli import losses
from susl_cli.config import ModelConfig, NetworkSettings
from susl_cli.models import build_model

DT = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- log-densities ---------------------------------------------------------------------------


def test_log_bernoulli_matches_torch_bernoulli_summed() -> None:
    g = _gen()
    logits = 3 * torch.randn(4, 3, 6, generator=g, dtype=DT)  # (B, E, D)
    x = torch.bernoulli(torch.full((4, 1, 6), 0.5, dtype=DT), generator=g)  # (B, 1, D)
    got = losses.log_bernoulli(x, logits)
    expected = Bernoulli(logits=logits).log_prob(x.expand_as(logits)).sum(-1)
    assert got.shape == (4, 3)
    torch.testing.assert_close(got, expected)


def test_log_bernoulli_accepts_grey_targets_and_extreme_logits() -> None:
    """Continuous targets give x log s + (1-x) log(1-s); huge logits stay finite."""
    g = _gen(1)
    x = torch.rand(5, 1, 8, generator=g, dtype=DT)
    logits = 60 * torch.randn(5, 2, 8, generator=g, dtype=DT)
    got = losses.log_bernoulli(x, logits)
    expected = (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(-1)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("sigma", [0.01, 1.0, 2.5])
def test_log_gaussian_fixed_matches_torch_normal(sigma: float) -> None:
    g = _gen(2)
    x = torch.randn(4, 1, 7, generator=g, dtype=DT)
    mean = x + sigma * torch.randn(4, 3, 7, generator=g, dtype=DT)
    got = losses.log_gaussian_fixed(x, mean, sigma)
    expected = Normal(mean, sigma).log_prob(x).sum(-1)
    assert got.shape == (4, 3)
    torch.testing.assert_close(got, expected)


def test_log_normal_diag_matches_torch_normal() -> None:
    g = _gen(3)
    z = torch.randn(6, 2, 5, generator=g, dtype=DT)
    mean = torch.randn(6, 2, 5, generator=g, dtype=DT)
    logvar = torch.randn(6, 2, 5, generator=g, dtype=DT)
    got = losses.log_normal_diag(z, mean, logvar)
    expected = Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    torch.testing.assert_close(got, expected)


# -- KL divergence ---------------------------------------------------------------------------


def _random_gaussians(seed: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    g = _gen(seed)
    return tuple(torch.randn(shape, generator=g, dtype=DT) for _ in range(4))


def test_kl_normal_diag_matches_torch_kl_divergence() -> None:
    qm, qlv, pm, plv = _random_gaussians(4, (8, 3, 5))
    got = losses.kl_normal_diag(qm, qlv, pm, plv)
    q = Normal(qm, torch.exp(0.5 * qlv))
    p = Normal(pm, torch.exp(0.5 * plv))
    torch.testing.assert_close(got, kl_divergence(q, p).sum(-1))


def test_kl_normal_diag_zero_for_identical_and_nonnegative_otherwise() -> None:
    qm, qlv, pm, plv = _random_gaussians(5, (200, 4))
    same = losses.kl_normal_diag(qm, qlv, qm.clone(), qlv.clone())
    torch.testing.assert_close(same, torch.zeros(200, dtype=DT), atol=1e-12, rtol=0)
    assert (losses.kl_normal_diag(qm, qlv, pm, plv) >= 0).all()


def test_kl_normal_diag_equals_monte_carlo_mean_of_log_ratio() -> None:
    qm, qlv, pm, plv = (t.squeeze(0) for t in _random_gaussians(6, (1, 3)))
    n = 200_000
    z = losses.sample_normal(qm.expand(n, 3), qlv.expand(n, 3), _gen(7))
    log_ratio = losses.log_normal_diag(z, qm, qlv) - losses.log_normal_diag(z, pm, plv)
    stderr = log_ratio.std() / n**0.5
    analytic = losses.kl_normal_diag(qm, qlv, pm, plv)
    assert abs(log_ratio.mean() - analytic) < 5 * stderr


# -- entropy and Gaussian sampling -----------------------------------------------------------


def test_categorical_entropy_matches_torch_categorical() -> None:
    g = _gen(8)
    logits = torch.cat(
        [torch.randn(10, 6, generator=g, dtype=DT), 40 * torch.randn(2, 6, generator=g, dtype=DT)]
    )
    got = losses.categorical_entropy(logits)
    torch.testing.assert_close(got, Categorical(logits=logits).entropy())
    uniform = losses.categorical_entropy(torch.zeros(1, 6, dtype=DT))
    torch.testing.assert_close(uniform, torch.log(torch.tensor([6.0], dtype=DT)))


def test_sample_normal_has_right_moments() -> None:
    mean = torch.tensor([-1.0, 0.0, 2.0], dtype=DT)
    logvar = torch.tensor([-2.0, 0.0, 1.0], dtype=DT)
    n = 100_000
    z = losses.sample_normal(mean.expand(n, 3), logvar.expand(n, 3), _gen(9))
    var = torch.exp(logvar)
    assert z.shape == (n, 3) and z.dtype == DT
    assert ((z.mean(0) - mean).abs() < 5 * (var / n).sqrt()).all()
    # the sample variance of a normal has standard error var * sqrt(2 / n)
    assert ((z.var(0) - var).abs() < 5 * var * (2 / n) ** 0.5).all()


def test_sample_normal_is_reproducible_with_the_same_generator_seed() -> None:
    mean, logvar = torch.zeros(50, 4, dtype=DT), torch.zeros(50, 4, dtype=DT)
    first = losses.sample_normal(mean, logvar, _gen(10))
    again = losses.sample_normal(mean, logvar, _gen(10))
    other = losses.sample_normal(mean, logvar, _gen(11))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_sample_normal_is_reparameterised() -> None:
    mean = torch.zeros(3, 2, dtype=DT, requires_grad=True)
    logvar = torch.zeros(3, 2, dtype=DT, requires_grad=True)
    z = losses.sample_normal(mean, logvar, _gen(12))
    z.sum().backward()
    eps = z.detach()  # mean 0, sigma 1: z is eps itself
    torch.testing.assert_close(mean.grad, torch.ones_like(mean))
    torch.testing.assert_close(logvar.grad, 0.5 * eps)


# -- straight-through Gumbel-softmax ---------------------------------------------------------


def _relaxed_sample(logits: torch.Tensor, temperature: float, seed: int) -> torch.Tensor:
    """The soft part of `gumbel_softmax_st`, rebuilt from the same uniform draws."""
    u = torch.rand(logits.shape, generator=_gen(seed), dtype=logits.dtype)
    gumbel = -torch.log(-torch.log(u))
    return F.softmax((logits + gumbel) / temperature, dim=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gumbel_forward_is_exactly_one_hot(dtype: torch.dtype) -> None:
    logits = torch.randn(2000, 7, generator=_gen(13), dtype=dtype)
    y = losses.gumbel_softmax_st(logits, 0.5, _gen(14))
    assert y.shape == logits.shape and y.dtype == dtype
    assert torch.equal(y, F.one_hot(y.argmax(-1), 7).to(dtype))


def test_gumbel_gradient_flows_to_logits() -> None:
    logits = torch.randn(16, 5, generator=_gen(15), dtype=DT).requires_grad_()
    weights = torch.randn(16, 5, generator=_gen(16), dtype=DT)
    (losses.gumbel_softmax_st(logits, 0.5, _gen(17)) * weights).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert (logits.grad.abs().sum(-1) > 0).all()


def test_gumbel_sample_frequencies_match_softmax() -> None:
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5, 2.0], dtype=DT)
    n = 5000
    y = losses.gumbel_softmax_st(logits.expand(n, 5), 0.5, _gen(18))
    observed = y.sum(0).numpy()
    expected = (n * F.softmax(logits, -1)).numpy()
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_relaxed_sample_helper_is_the_functions_soft_part() -> None:
    """Same argmax, and the straight-through gradient is exactly the soft sample's gradient."""
    logits = torch.randn(64, 6, generator=_gen(19), dtype=DT).requires_grad_()
    weights = torch.randn(64, 6, generator=_gen(20), dtype=DT)
    hard = losses.gumbel_softmax_st(logits, 0.7, _gen(21))
    (grad_st,) = torch.autograd.grad((hard * weights).sum(), logits)
    soft = _relaxed_sample(logits, 0.7, 21)
    (grad_soft,) = torch.autograd.grad((soft * weights).sum(), logits)
    assert torch.equal(hard.argmax(-1), soft.argmax(-1))
    torch.testing.assert_close(grad_st, grad_soft)


def test_relaxed_gumbel_sample_becomes_one_hot_as_temperature_falls() -> None:
    logits = torch.randn(2000, 6, generator=_gen(22), dtype=DT)
    hard = F.one_hot(losses.gumbel_softmax_st(logits, 1.0, _gen(23)).argmax(-1), 6).to(DT)
    gaps = []
    for temperature in (2.0, 0.5, 0.1, 0.01, 0.001):
        soft = _relaxed_sample(logits, temperature, 23)
        gaps.append((soft - hard).abs().sum(-1).mean().item())  # mean L1 distance to one-hot
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 0.01


# -- expectation over the unknown label ------------------------------------------------------


def _toy_terms(features: torch.Tensor, mixing: torch.Tensor):
    """An arbitrary terms_fn: y (B, E, K) -> named (B, E) tensors, nonlinear in y."""

    def terms(y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "linear": (y * features.unsqueeze(1)).sum(-1),
            "nonlinear": torch.exp(torch.sin(y @ mixing).sum(-1)) * features[:, :1],
        }

    return terms


def _loop_over_y(terms_fn, qy_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Brute force: sum_k q(y=k|x) terms(onehot k), one component at a time."""
    batch, k = qy_logits.shape
    probs = F.softmax(qy_logits, -1)
    total: dict[str, torch.Tensor] = {}
    for c in range(k):
        onehot = F.one_hot(torch.full((batch,), c), k).to(qy_logits.dtype).unsqueeze(1)
        for name, value in terms_fn(onehot).items():
            total[name] = total.get(name, 0) + probs[:, c] * value.squeeze(1)
    return total


def test_enumerate_equals_explicit_loop_for_an_arbitrary_terms_fn() -> None:
    g = _gen(24)
    features, mixing = (
        torch.randn(5, 4, generator=g, dtype=DT),
        torch.randn(4, 3, generator=g, dtype=DT),
    )
    qy_logits = torch.randn(5, 4, generator=g, dtype=DT)
    terms_fn = _toy_terms(features, mixing)
    got = losses.expectation_over_y(terms_fn, qy_logits, "enumerate")
    expected = _loop_over_y(terms_fn, qy_logits)
    assert set(got) == set(expected)
    for name in expected:
        assert got[name].shape == (5,)
        torch.testing.assert_close(got[name], expected[name])


def _small_model(name: str) -> torch.nn.Module:
    config = ModelConfig(
        model=name,
        input_dim=10,
        n_components=4,
        n_labelled=2,
        settings=NetworkSettings(latent_dim=3, hidden_units=16),
        prior=(0.4, 0.3, 0.2, 0.1),
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(config)
        model.reset_parameters()
        for param in model.parameters():  # move away from the near-zero heads: visible terms
            torch.nn.init.normal_(param, 0.0, 0.5)
    return model.double()


@pytest.mark.parametrize("name", ["m2", "gmdgm"])
def test_enumerate_equals_loop_for_a_models_deterministic_terms(name: str) -> None:
    """With the analytic KL, kl_z and log p(y) do not depend on the sampled z."""
    model = _small_model(name)
    x = torch.rand(6, 1, 10, generator=_gen(25), dtype=DT)
    qy_logits = model.classifier_logits(x.squeeze(1))

    def terms_fn(y: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = model.elbo_terms(x, y, "analytic", None)
        return {"kl_z": terms["kl_z"], "log_py": terms["log_py"]}

    got = losses.expectation_over_y(terms_fn, qy_logits, "enumerate")
    expected = _loop_over_y(terms_fn, qy_logits)
    for key in ("kl_z", "log_py"):
        torch.testing.assert_close(got[key], expected[key])


@pytest.mark.parametrize("name", ["m2", "gmdgm"])
def test_enumerate_equals_loop_for_all_model_terms_with_z_at_the_mean(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(losses, "sample_normal", lambda mean, logvar, generator, rows=None: mean)
    model = _small_model(name)
    x = torch.rand(6, 1, 10, generator=_gen(26), dtype=DT)
    qy_logits = model.classifier_logits(x.squeeze(1))

    def terms_fn(y: torch.Tensor) -> dict[str, torch.Tensor]:
        return model.elbo_terms(x, y, "sampled", None)

    got = losses.expectation_over_y(terms_fn, qy_logits, "enumerate")
    expected = _loop_over_y(terms_fn, qy_logits)
    assert set(got) == {"recon", "kl_z", "log_py"}
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value)


def test_gumbel_returns_terms_at_the_sampled_one_hot() -> None:
    g = _gen(27)
    features, mixing = (
        torch.randn(8, 5, generator=g, dtype=DT),
        torch.randn(5, 2, generator=g, dtype=DT),
    )
    qy_logits = torch.randn(8, 5, generator=g, dtype=DT, requires_grad=True)
    terms_fn = _toy_terms(features, mixing)
    seen: list[torch.Tensor] = []

    def recording(y: torch.Tensor) -> dict[str, torch.Tensor]:
        seen.append(y)
        return terms_fn(y)

    got = losses.expectation_over_y(recording, qy_logits, "gumbel", 0.5, _gen(28))
    (y,) = seen
    assert y.shape == (8, 1, 5)
    assert torch.equal(y, F.one_hot(y.argmax(-1), 5).to(DT))
    at_sample = terms_fn(y.detach())
    for name, value in got.items():
        assert value.shape == (8,)
        torch.testing.assert_close(value, at_sample[name].squeeze(1))
    got["linear"].sum().backward()
    assert qy_logits.grad is not None and qy_logits.grad.abs().sum() > 0

    again = losses.expectation_over_y(terms_fn, qy_logits.detach(), "gumbel", 0.5, _gen(28))
    torch.testing.assert_close(again["linear"], got["linear"].detach())


def _weighted_terms(values: torch.Tensor):
    """terms(y) = y . values per example: a stand-in for the ELBO with a known expectation."""
    per_setting = values.unsqueeze(1)  # (B, 1, K) against y (B, E, K)
    return lambda y: {"f": (y * per_setting).sum(-1), "g": (y * per_setting ** 2).sum(-1)}


def test_topk_with_all_but_one_summed_is_exact_in_value_and_gradient() -> None:
    # K - 1 summed: the one left is drawn with certainty, so the estimate is the exact sum.
    values = torch.randn(6, 5, dtype=DT, generator=_gen(40))
    logits = torch.randn(6, 5, dtype=DT, generator=_gen(41), requires_grad=True)
    exact = losses.expectation_over_y(_weighted_terms(values), logits, "enumerate")
    got = losses.expectation_over_y(_weighted_terms(values), logits, "topk",
                                    generator=_gen(42), topk=4)
    for name in exact:
        torch.testing.assert_close(got[name], exact[name])
    grad_exact, = torch.autograd.grad(exact["f"].sum(), logits)
    grad_got, = torch.autograd.grad(got["f"].sum(), logits)
    torch.testing.assert_close(grad_got, grad_exact)


def test_topk_is_unbiased_in_value_and_gradient() -> None:
    # Two summed of eight, one drawn: over many draws the mean estimate and its gradient with
    # respect to the logits (the score-function part included) reach the exact ones.
    rows, k, draws = 3, 8, 20000
    values = torch.randn(rows, k, dtype=DT, generator=_gen(43))
    logits = (0.7 * torch.randn(rows, k, dtype=DT, generator=_gen(44))).requires_grad_()
    exact = losses.expectation_over_y(_weighted_terms(values), logits, "enumerate")["f"]
    grad_exact, = torch.autograd.grad(exact.sum(), logits)
    tiled = logits.repeat(draws, 1)  # each row drawn `draws` times in one batch
    est = losses.expectation_over_y(_weighted_terms(values.repeat(draws, 1)), tiled, "topk",
                                    generator=_gen(45), topk=2)["f"]
    mean = est.reshape(draws, rows).mean(0)
    grad_mean, = torch.autograd.grad(mean.sum(), logits)
    torch.testing.assert_close(mean, exact, atol=0.02, rtol=0)
    torch.testing.assert_close(grad_mean, grad_exact, atol=0.02, rtol=0)


def test_topk_runs_the_terms_on_topk_plus_one_settings_led_by_the_most_probable() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]], dtype=DT)
    seen = []

    def recording(y: torch.Tensor) -> dict[str, torch.Tensor]:
        seen.append(y)
        return {"f": y.sum(-1)}

    losses.expectation_over_y(recording, logits, "topk", generator=_gen(47), topk=2)
    y = seen[0]
    assert y.shape == (1, 3, 5)
    assert y[0, 0].argmax() == 1 and y[0, 1].argmax() == 3  # the two most probable, in order
    assert y[0, 2].argmax() not in (1, 3)  # the draw comes from the rest


def test_expectation_over_y_rejects_unknown_estimator() -> None:
    with pytest.raises(ValueError, match="estimator"):
        losses.expectation_over_y(lambda y: {}, torch.zeros(2, 3), "reinforce")


# -- label-evidence cross-entropy ------------------------------------------------------------


def test_evidence_cross_entropy_is_the_new_labels_cross_entropy_past_one_half() -> None:
    g = _gen()
    logits = 4 * torch.randn(64, 5, generator=g, dtype=DT)  # components 0, 1 labelled
    novelty = torch.rand(64, generator=g, dtype=DT)
    extra_mass = F.softmax(logits, -1)[:, 2:].sum(-1)
    weight = torch.where(novelty > 0.5, novelty, torch.zeros_like(novelty))
    assert (novelty < 0.5).any() and (novelty > 0.5).any()  # both sides are checked
    assert torch.allclose(losses.evidence_cross_entropy(logits, 2, novelty),
                          -weight * extra_mass.log())
    # finite where q is certain (probabilities would give log 0)
    sure = torch.tensor([[60.0, -60.0, -60.0]], dtype=DT)
    assert torch.isfinite(losses.evidence_cross_entropy(sure, 1, torch.ones(1, dtype=DT))).all()


def test_evidence_cross_entropy_pushes_rows_called_new_out_and_never_pulls_in() -> None:
    logits = torch.tensor([[3.0, 0.0, 0.0]] * 3, dtype=DT, requires_grad=True)
    # new; surely of a labelled class; more likely known than new (neighbour-count noise)
    novelty = torch.tensor([1.0, 0.0, 0.4], dtype=DT)
    losses.evidence_cross_entropy(logits, 1, novelty).sum().backward()
    assert logits.grad[0, 0] > 0 > logits.grad[0, 1]  # descent lowers the labelled logit
    assert torch.equal(logits.grad[1:], torch.zeros(2, 3, dtype=DT))  # no force on known rows
