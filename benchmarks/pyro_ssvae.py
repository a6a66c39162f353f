"""M2 and GM-DGM as straightforward Pyro SVI programs: the baseline of benchmarks/bench_train.py.

Written the way Pyro's `examples/vae/ss_vae_M2.py` writes M2: each conditional network takes
the concatenation [input, one-hot y] (broadcast over the enumerated labels), the guide's
q(y|x) is enumerated in parallel (`config_enumerate(..., expand=True)`) and the ELBO is
`TraceEnum_ELBO`. The networks, the prior p(y), the batch (100 labelled + 100 unlabelled) and
the objective are susl's:

    loss = -( mean_l[ L(x, y) + alpha log q(y|x) ] + mean_u[ E_q(y|x) L(x, y) + H[q(y|x)] ] )

with the Gaussian KL estimated from the sampled z (TraceEnum_ELBO has no analytic KL; susl's
default is analytic, which has the same cost). `copy_from` loads a susl model's weights so the
two programs can be compared on the same parameters.

Needs the optional `bench` extra (pyro-ppl); susl itself does not import Pyro.
"""

from __future__ import annotations

import torch
from torch import nn

try:  # optional: the `bench` extra (pyro-ppl); bench_train.py measures susl alone without it
    import pyro
    import pyro.distributions as dist
    from pyro import poutine
    from pyro.infer import SVI, TraceEnum_ELBO, config_enumerate
    from pyro.optim import Adam
except ImportError as err:  # bench_train._import_pyro reports it in one line
    raise ImportError("pyro-ppl is not installed: pip install -e '.[bench]'") from err

from susl_cli.models.base import SuslModel


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, out_dim))


def _concat(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[a, y] after broadcasting the batch shapes, as the Pyro example's ConcatModule does."""
    shape = torch.broadcast_shapes(a.shape[:-1], y.shape[:-1])
    return torch.cat([a.expand(*shape, a.shape[-1]), y.expand(*shape, y.shape[-1])], -1)


class PyroSSVAE(nn.Module):
    """p(x, y, z) and q(y, z | x) of susl's M2 or GM-DGM, as a Pyro model and guide."""

    def __init__(self, model: SuslModel, alpha: float) -> None:
        super().__init__()
        c = model.config
        self.kind, self.alpha, self.latent_dim = c.model, alpha, c.latent_dim
        k, h = c.n_components, c.hidden_units
        self.encoder_y = _mlp(c.input_dim, h, k)  # q(y|x)
        self.encoder_z = _mlp(c.input_dim + k, h, 2 * c.latent_dim)  # q(z|x,y): mean, logvar
        self.decoder = _mlp(c.latent_dim + (k if self.kind == "m2" else 0), h, c.input_dim)
        if self.kind == "gmdgm":
            self.component_mean = nn.Parameter(torch.zeros(k, c.latent_dim))
            self.component_logvar = nn.Parameter(torch.zeros(k, c.latent_dim))
        self.register_buffer("prior", model.log_prior.exp().detach().clone())
        self.copy_from(model)

    @torch.no_grad()
    def copy_from(self, model: SuslModel) -> None:
        """Load a susl model's weights (its split first layers become one concatenated Linear)."""
        def load(dst: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
            dst.weight.copy_(weight)
            dst.bias.copy_(bias)

        def load_mlp(dst: nn.Sequential, src: nn.Module) -> None:
            for i, layer in ((0, src.hidden[0]), (2, src.hidden[2]), (4, src.head)):
                load(dst[i], layer.weight, layer.bias)

        def load_trunk(dst: nn.Sequential, trunk: nn.Module) -> None:
            load(dst[0], torch.cat([trunk.input_layer.weight, trunk.label_layer.weight], 1),
                 trunk.input_layer.bias)
            load(dst[2], trunk.second.weight, trunk.second.bias)

        load_mlp(self.encoder_y, model.classifier)
        load_trunk(self.encoder_z, model.qz_trunk)
        head = model.qz_head
        load(self.encoder_z[4], torch.cat([head.mean.weight, head.logvar.weight]),
             torch.cat([head.mean.bias, head.logvar.bias]))
        if self.kind == "m2":
            load_trunk(self.decoder, model.decoder_trunk)
            load(self.decoder[4], model.decoder_head.weight, model.decoder_head.bias)
        else:
            load_mlp(self.decoder, model.decoder)
            self.component_mean.copy_(model.component_mean)
            self.component_logvar.copy_(model.component_logvar)

    # -- the probabilistic program -------------------------------------------------------------
    def _prior_z(self, y: torch.Tensor) -> dist.Distribution:
        if self.kind == "m2":
            zeros = y.new_zeros((*y.shape[:-1], self.latent_dim))
            return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)
        return dist.Normal(y @ self.component_mean,
                           torch.exp(0.5 * (y @ self.component_logvar))).to_event(1)

    def _decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(_concat(z, y) if self.kind == "m2" else z)

    def _posterior_z(self, x: torch.Tensor, y: torch.Tensor) -> dist.Distribution:
        mean, logvar = self.encoder_z(_concat(x, y)).chunk(2, -1)
        return dist.Normal(mean, torch.exp(0.5 * logvar)).to_event(1)

    def model(self, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor) -> None:
        pyro.module("ssvae", self)
        with pyro.plate("labelled", len(x_l)), poutine.scale(scale=1.0 / len(x_l)):
            y = pyro.sample("y_l", dist.OneHotCategorical(probs=self.prior), obs=y_l)
            z = pyro.sample("z_l", self._prior_z(y))
            pyro.sample("x_l", dist.Bernoulli(logits=self._decode(z, y)).to_event(1), obs=x_l)
            with poutine.scale(scale=self.alpha):  # the classifier's labelled term
                pyro.sample("y_aux", dist.OneHotCategorical(logits=self.encoder_y(x_l)), obs=y_l)
        with pyro.plate("unlabelled", len(x_u)), poutine.scale(scale=1.0 / len(x_u)):
            y = pyro.sample("y_u", dist.OneHotCategorical(probs=self.prior))
            z = pyro.sample("z_u", self._prior_z(y))
            pyro.sample("x_u", dist.Bernoulli(logits=self._decode(z, y)).to_event(1), obs=x_u)

    def guide(self, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor) -> None:
        with pyro.plate("labelled", len(x_l)), poutine.scale(scale=1.0 / len(x_l)):
            pyro.sample("z_l", self._posterior_z(x_l, y_l))
        with pyro.plate("unlabelled", len(x_u)), poutine.scale(scale=1.0 / len(x_u)):
            y = pyro.sample("y_u", dist.OneHotCategorical(logits=self.encoder_y(x_u)))
            pyro.sample("z_u", self._posterior_z(x_u, y))


def make_svi(program: PyroSSVAE, learning_rate: float) -> SVI:
    """SVI with parallel enumeration of the guide's y, as in Pyro's ss_vae_M2 example."""
    pyro.clear_param_store()
    pyro.enable_validation(False)  # the fastest setting Pyro offers without JIT
    guide = config_enumerate(program.guide, "parallel", expand=True)
    return SVI(program.model, guide, Adam({"lr": learning_rate}),
               loss=TraceEnum_ELBO(max_plate_nesting=1))


def loss_draws(program: PyroSSVAE, batch: tuple[torch.Tensor, ...], draws: int) -> list[float]:
    """`draws` independent estimates of the loss on one batch, without training."""
    guide = config_enumerate(program.guide, "parallel", expand=True)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    return [elbo.loss(program.model, guide, *batch) for _ in range(draws)]


def set_validation(enabled: bool) -> None:
    """Pyro's argument and support checks (on by default in Pyro; off is its fastest mode)."""
    pyro.enable_validation(enabled)
