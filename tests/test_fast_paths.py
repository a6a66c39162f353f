"""The engine's fast paths against the straightforward formulations they replace.

Each fast path (issue #5) must give the same loss and the same gradients as the plain code to
float tolerance: the label part of the conditional trunk computed once for the K enumerated
one-hots, in-place ReLUs, the mean and log-variance heads as one matrix product, the Bernoulli
log-likelihood with its hand-written backward, and fused Adam.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from susl_cli import losses
from susl_cli.config import ModelConfig, NetworkSettings, ObjectiveConfig, TrainConfig
from susl_cli.cpu_tuning import keep_cpu_buffers, tune_cpu
from susl_cli.models import Batch, build_model
from susl_cli.models.networks import MLP, ConditionalTrunk, GaussianHead
from susl_cli.runs import make_optimizer

DT = torch.float64
B, D, K, Z, H = 6, 12, 5, 3, 16


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def naive_trunk(trunk: ConditionalTrunk, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """relu(W [a, y] + b) -> relu(W2 h + b2) with the concatenation materialised, B x E times."""
    shape = torch.broadcast_shapes(a.shape[:-1], y.shape[:-1])
    joint = torch.cat([a.expand(*shape, a.shape[-1]), y.expand(*shape, y.shape[-1])], -1)
    weight = torch.cat([trunk.input_layer.weight, trunk.label_layer.weight], 1)
    h = torch.relu(F.linear(joint, weight, trunk.input_layer.bias))
    return torch.relu(trunk.second(h))


def naive_log_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The formula through autograd: -BCE(logits, x) summed over the last axis."""
    x = x.expand_as(logits)
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def _model(name: str) -> torch.nn.Module:
    config = ModelConfig(model=name, input_dim=D, n_components=K, n_labelled=2,
                         settings=NetworkSettings(latent_dim=Z, hidden_units=H),
                         prior=(0.3, 0.2, 0.2, 0.2, 0.1))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(config)
        model.reset_parameters()
        for param in model.parameters():  # away from the near-zero heads: visible gradients
            torch.nn.init.normal_(param, 0.0, 0.3)
    return model.to(DT)


def _loss_and_grads(model, estimator: str, kl: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = _gen(1)
    x_l = torch.bernoulli(torch.full((B, D), 0.4, dtype=DT), generator=g)
    y_l = torch.randint(2, (B,), generator=g)
    x_u = torch.bernoulli(torch.full((B, D), 0.6, dtype=DT), generator=g)
    model.objective = ObjectiveConfig(y_estimator=estimator, kl=kl, alpha=2.0)
    model.zero_grad(set_to_none=True)
    loss = model(Batch(x_l, y_l, x_u, _gen(2))).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_trunk_with_labels_shared_across_the_batch_equals_concatenation() -> None:
    """Enumeration passes the K one-hots expanded over the batch (stride 0): W_y y once."""
    torch.manual_seed(0)
    trunk = ConditionalTrunk(7, K, H).to(DT)
    a = torch.randn(B, 1, 7, dtype=DT, requires_grad=True)
    y = torch.eye(K, dtype=DT).expand(B, K, K)
    assert y.stride(0) == 0
    got = trunk(a, y)
    grads = torch.autograd.grad(got.square().sum(), [a, *trunk.parameters()])
    expected = naive_trunk(trunk, a, y)
    expected_grads = torch.autograd.grad(expected.square().sum(), [a, *trunk.parameters()])
    assert got.shape == (B, K, H)
    torch.testing.assert_close(got, expected)
    for mine, plain in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(mine, plain)


def test_trunk_with_one_input_for_many_label_batches_keeps_the_batch_shape() -> None:
    """a (1, 1, A) against expanded y (R, E, K) must still give (R, E, H)."""
    trunk = ConditionalTrunk(4, K, H).to(DT)
    a = torch.randn(1, 1, 4, dtype=DT)
    y = torch.eye(K, dtype=DT)[:3].expand(2, 3, K)
    torch.testing.assert_close(trunk(a, y), naive_trunk(trunk, a, y))


def naive_mlp(mlp: MLP, x: torch.Tensor) -> torch.Tensor:
    return mlp.head(mlp.hidden(x))  # nn.Sequential with out-of-place ReLUs


@pytest.mark.parametrize("shape", [(B, 7), (B, K, 7), (7,)])
def test_mlp_with_in_place_relus_equals_the_sequential(shape) -> None:
    torch.manual_seed(2)
    mlp = MLP(7, H, 4).to(DT)
    x = torch.randn(shape, dtype=DT, requires_grad=True)
    got, expected = mlp(x), naive_mlp(mlp, x)
    torch.testing.assert_close(got, expected)
    mine = torch.autograd.grad(got.square().sum(), [x, *mlp.parameters()])
    plain = torch.autograd.grad(expected.square().sum(), [x, *mlp.parameters()])
    for a, b in zip(mine, plain, strict=True):
        torch.testing.assert_close(a, b)


def naive_head(head: GaussianHead, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return head.mean(h), head.logvar(h)


def test_gaussian_head_with_stacked_weights_equals_two_linears() -> None:
    torch.manual_seed(1)
    head = GaussianHead(H, Z).to(DT)
    h = torch.randn(B, K, H, dtype=DT, requires_grad=True)
    outputs = head(h)
    expected = naive_head(head, h)
    mine = torch.autograd.grad(sum(o.square().sum() for o in outputs), [h, *head.parameters()])
    plain = torch.autograd.grad(sum(o.square().sum() for o in expected),
                                [h, *head.parameters()])
    for a, b in zip([*outputs, *mine], [*expected, *plain], strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("x_shape", [(4, 1, 9), (4, 3, 9), (9,)])
def test_log_bernoulli_value_and_gradients_equal_the_plain_formula(x_shape) -> None:
    g = _gen(3)
    logits = (4 * torch.randn(4, 3, 9, generator=g, dtype=DT)).requires_grad_()
    x = torch.rand(x_shape, generator=g, dtype=DT).requires_grad_()  # grey targets too
    weights = torch.randn(4, 3, generator=g, dtype=DT)
    got = losses.log_bernoulli(x, logits)
    expected = naive_log_bernoulli(x, logits)
    torch.testing.assert_close(got, expected)
    mine = torch.autograd.grad((got * weights).sum(), [x, logits])
    plain = torch.autograd.grad((expected * weights).sum(), [x, logits])
    for a, b in zip(mine, plain, strict=True):
        torch.testing.assert_close(a, b)


def test_log_bernoulli_passes_gradcheck() -> None:
    g = _gen(4)
    logits = torch.randn(3, 2, 5, generator=g, dtype=DT, requires_grad=True)
    x = torch.rand(3, 1, 5, generator=g, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(losses.log_bernoulli, (x, logits))


@pytest.mark.parametrize("name", ["m2", "gmdgm"])
@pytest.mark.parametrize(("estimator", "kl"), [("enumerate", "analytic"),
                                               ("enumerate", "sampled"),
                                               ("gumbel", "analytic")])
def test_training_loss_and_gradients_equal_the_straightforward_engine(
    name: str, estimator: str, kl: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(name)
    loss, grads = _loss_and_grads(model, estimator, kl)
    monkeypatch.setattr(ConditionalTrunk, "forward", naive_trunk)
    monkeypatch.setattr(GaussianHead, "forward", naive_head)
    monkeypatch.setattr(MLP, "forward", naive_mlp)
    monkeypatch.setattr(losses, "log_bernoulli", naive_log_bernoulli)
    plain_loss, plain_grads = _loss_and_grads(model, estimator, kl)
    torch.testing.assert_close(loss, plain_loss)
    for mine, plain in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(mine, plain)


def test_fused_adam_follows_the_reference_adam() -> None:
    fused_model, loop_model = _model("gmdgm"), _model("gmdgm")
    config = TrainConfig(learning_rate=1e-2, weight_decay=1e-3)
    fused = make_optimizer(fused_model, config)
    loop = torch.optim.Adam(loop_model.parameters(), lr=1e-2, weight_decay=1e-3,
                            foreach=False)
    assert fused.defaults["fused"]
    for _ in range(3):
        for model, optimizer in ((fused_model, fused), (loop_model, loop)):
            _loss_and_grads(model, "enumerate", "analytic")
            optimizer.step()
    for a, b in zip(fused_model.parameters(), loop_model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_cpu_settings_are_idempotent() -> None:
    first = keep_cpu_buffers()
    assert isinstance(first, bool)
    assert keep_cpu_buffers() == first
    settings = tune_cpu()
    assert settings == tune_cpu() and set(settings) == {"flush_denormal", "keep_buffers"}
