"""Pure log-density, divergence and expectation functions. All return per-example tensors.

Shapes: B = batch, E = number of y settings evaluated per example (K when enumerating,
1 when sampling), K = components, D = input dimensions, Z = latent dimensions.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F

from susl_cli.label_evidence import CALLED_NEW

LOG_2PI = math.log(2 * math.pi)


def log_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x) for independent Bernoullis with the given logits, summed over the last axis.

    log p(x) = sum_d x_d l_d - softplus(l_d), which is x log s + (1 - x) log(1 - s) with
    s = sigmoid(l), also for grey targets x in [0, 1]. `x` broadcasts against `logits`
    (x: (B, 1, D), logits: (B, E, D) -> (B, E)) without being copied E times.
    """
    return _BernoulliLogLik.apply(x, logits)


class _BernoulliLogLik(torch.autograd.Function):
    """log_bernoulli with a hand-written backward: d/dl = x - sigmoid(l), d/dx = l.

    Autograd through binary_cross_entropy_with_logits materialises the broadcast target and
    several (B, E, D) temporaries; this reads the logits twice in the forward (x.l as a
    batched matrix product, softplus) and makes three in-place passes in the backward
    (tests/test_fast_paths.py checks both against the plain formula).
    """

    @staticmethod
    def forward(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x.dim() >= 2 and x.shape[-2] == 1:  # x (B, 1, D): sum_d x_d l_d as one (E, D) @ (D, 1)
            x_dot_l = torch.matmul(logits, x.transpose(-1, -2)).squeeze(-1)
        else:
            x_dot_l = (logits * x).sum(-1)
        return x_dot_l - F.softplus(logits).sum(-1)

    # setup_context (not ctx in forward) and a vmap rule let torch.func.vmap run it: seed
    # batching (susl_cli/seed_batch.py) evaluates S models at once with it.
    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        ctx.save_for_backward(*inputs)

    @staticmethod
    def vmap(info, in_dims, x: torch.Tensor, logits: torch.Tensor):  # type: ignore[override]
        """Both the forward and the backward broadcast over leading axes: move the vmapped axis
        of each input to the front (an unbatched x broadcasts as it is) and apply once."""
        x_dim, logits_dim = in_dims
        if x_dim is not None:
            x = x.movedim(x_dim, 0)
        if logits_dim is None:
            logits = logits.expand(info.batch_size, *logits.shape)
        else:
            logits = logits.movedim(logits_dim, 0)
        return _BernoulliLogLik.apply(x, logits), 0

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, logits = ctx.saved_tensors
        g = grad.unsqueeze(-1)  # (..., 1)
        grad_x = grad_logits = None
        if ctx.needs_input_grad[1]:
            s = torch.sigmoid(logits)
            if torch.broadcast_shapes(x.shape, logits.shape) == logits.shape:
                grad_logits = s.sub_(x).mul_(-g)  # g (x - s), in place
            else:
                grad_logits = _sum_to((x - s) * g, logits.shape)
        if ctx.needs_input_grad[0]:
            grad_x = _sum_to(logits * g, x.shape)
        return grad_x, grad_logits


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Undo broadcasting: sum `t` down to `shape`."""
    return t if t.shape == shape else t.sum_to_size(shape)


def log_gaussian_fixed(x: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(x | mean, sigma^2 I) summed over the last axis."""
    sq = (x - mean).pow(2).sum(-1)
    d = mean.shape[-1]
    return -0.5 * (sq / sigma**2 + d * (LOG_2PI + 2 * math.log(sigma)))


def log_normal_diag(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z | mean, diag exp(logvar)) summed over the last axis."""
    return -0.5 * (LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar)).sum(-1)


def kl_normal_diag(
    q_mean: torch.Tensor, q_logvar: torch.Tensor, p_mean: torch.Tensor, p_logvar: torch.Tensor
) -> torch.Tensor:
    """KL(N(q_mean, exp q_logvar) || N(p_mean, exp p_logvar)), diagonal, summed over last axis."""
    ratio = torch.exp(q_logvar - p_logvar)
    return 0.5 * (ratio + (q_mean - p_mean).pow(2) * torch.exp(-p_logvar) - 1 - q_logvar
                  + p_logvar).sum(-1)


Rows = tuple[int, int] | None  # (start, global rows): these rows are a slice of a batch
# (sampler, like, generator, rows) -> noise: replaces `draw`'s own sampling while set
NoiseSource = Callable[[Callable[..., torch.Tensor], torch.Tensor, "torch.Generator | None",
                        Rows], torch.Tensor]
_noise_source: contextvars.ContextVar[NoiseSource | None] = contextvars.ContextVar(
    "susl_noise_source", default=None)


@contextlib.contextmanager
def noise_source(source: NoiseSource) -> Iterator[None]:
    """Within the block every `draw` comes from `source`: seed batching (susl_cli/seed_batch.py)
    records the draws of a step and replays each seed's own inside torch.func.vmap, where one
    torch.Generator per seed cannot be passed."""
    token = _noise_source.set(source)
    try:
        yield
    finally:
        _noise_source.reset(token)


def draw(sampler: Callable[..., torch.Tensor], like: torch.Tensor,
         generator: torch.Generator | None, rows: Rows = None) -> torch.Tensor:
    """`sampler` (torch.randn or torch.rand) noise shaped like `like` (B, ...). With `rows`
    = (start, n), `like` holds rows start..start+B of a batch of n rows: the noise of all n
    rows is drawn and the slice kept, so each row gets the draw it would get in the whole
    batch, whichever process holds it (susl_cli/models/shard.py)."""
    source = _noise_source.get()
    if source is not None:
        return source(sampler, like, generator, rows)
    if rows is None:
        return sampler(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    start, total = rows
    full = sampler((total, *like.shape[1:]), generator=generator, device=like.device,
                   dtype=like.dtype)
    return full[start:start + like.shape[0]]


def sample_normal(
    mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None,
    rows: Rows = None,
) -> torch.Tensor:
    """Reparameterised draw z = mean + sigma * eps (`rows`: see `draw`)."""
    eps = draw(torch.randn, mean, generator, rows)
    return mean + torch.exp(0.5 * logvar) * eps


def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H[Cat(softmax(logits))] over the last axis."""
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def gumbel_softmax_st(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None,
    rows: Rows = None,
) -> torch.Tensor:
    """One straight-through Gumbel-softmax sample: exactly one-hot forward, relaxed gradient.

    One-hot in the forward pass keeps every network input and the p(z|y) look-up exact, as in
    enumeration; the gradient flows through the tempered softmax (Jang et al. 2017).
    """
    u = draw(torch.rand, logits, generator, rows)
    exponential = (-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20)  # -log u ~ Exp(1)
    gumbel = -torch.log(exponential)
    soft = F.softmax((logits + gumbel) / temperature, dim=-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


TermsFn = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


def expectation_over_y(
    terms_fn: TermsFn,
    qy_logits: torch.Tensor,
    estimator: str,
    temperature: float = 0.5,
    generator: torch.Generator | None = None,
    rows: Rows = None,
    topk: int = 4,
) -> dict[str, torch.Tensor]:
    """E_{q(y|x)}[terms(y)] for each named term: the one place the unknown label is summed out.

    `terms_fn` maps one-hot labels of shape (B, E, K) to named (B, E) tensors.
    - "enumerate": exact sum over all K components weighted by q(y|x) (E = K).
    - "gumbel": one straight-through Gumbel-softmax sample per example (E = 1).
    - "topk": the `topk` most probable components summed, one more drawn (E = topk + 1),
      unbiased (`_summed_and_sampled`).
    Returns named (B,) tensors. `rows`: these examples' place in a sharded batch (`draw`).
    """
    batch, k = qy_logits.shape
    if estimator == "enumerate":
        eye = torch.eye(k, device=qy_logits.device, dtype=qy_logits.dtype)
        terms = terms_fn(eye.expand(batch, k, k))  # each (B, K)
        probs = F.softmax(qy_logits, dim=-1)
        return {name: (probs * value).sum(-1) for name, value in terms.items()}
    if estimator == "gumbel":
        y = gumbel_softmax_st(qy_logits, temperature, generator, rows).unsqueeze(1)  # (B, 1, K)
        return {name: value.squeeze(1) for name, value in terms_fn(y).items()}
    if estimator == "topk":
        return _summed_and_sampled(terms_fn, qy_logits, topk, generator, rows)
    raise ValueError(f"unknown y estimator {estimator!r}")


def _summed_and_sampled(terms_fn: TermsFn, qy_logits: torch.Tensor, topk: int,
                        generator: torch.Generator | None, rows: Rows) -> dict[str, torch.Tensor]:
    """Rao-Blackwellised estimate of E_q(y|x)[f(y)] (Liu et al. 2019, "Rao-Blackwellized
    stochastic gradients for discrete distributions"): the `topk` most probable components T
    exactly, plus one draw y* from q restricted to the rest, weighted by the rest's mass:

        sum_{y in T} q(y) f(y) + (1 - q(T)) f(y*),    y* ~ q(y | y not in T).

    Unbiased in value and gradient for any T chosen from q: the draw's dependence on q enters
    through a score-function term, (f(y*) - b) * grad log q(y* | not T), whose baseline b is
    the summed components' mean of f (any b free of y* keeps it unbiased; this one is close to
    f(y*), so the term is small). It is zero in the forward pass. When q is confident the
    rest's mass is tiny and the estimate is nearly the exact sum, at (topk + 1) / K of the
    cost: the decoder runs on topk + 1 label settings, not K."""
    k = qy_logits.shape[-1]
    n_sum = min(topk, k - 1)  # at least one component left to draw from
    log_q = F.log_softmax(qy_logits, dim=-1)
    top_log_q, top_idx = log_q.topk(n_sum, dim=-1)  # (B, n_sum)
    top_q = top_log_q.exp()
    rest_mass = (1 - top_q.sum(-1)).clamp_min(0)  # (B,)
    summed_out = torch.zeros_like(qy_logits, dtype=torch.bool).scatter(-1, top_idx, True)
    rest_log_q = log_q.masked_fill(summed_out, -math.inf)
    rest_log_q = rest_log_q - torch.logsumexp(rest_log_q, -1, keepdim=True)  # q(y | not T)
    u = draw(torch.rand, qy_logits, generator, rows)  # Gumbel-max draw from q(y | not T)
    gumbel = -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))
    drawn = (rest_log_q.detach() + gumbel).argmax(-1, keepdim=True)  # (B, 1)
    y = F.one_hot(torch.cat([top_idx, drawn], -1), k).to(qy_logits.dtype)  # (B, n_sum + 1, K)
    log_q_drawn = rest_log_q.gather(-1, drawn).squeeze(-1)  # (B,)
    score = log_q_drawn - log_q_drawn.detach()  # 0 forward, grad log q(y* | not T) backward
    out = {}
    for name, value in terms_fn(y).items():  # value: (B, n_sum + 1)
        summed, sampled = value[:, :n_sum], value[:, n_sum]
        baseline = (top_q * summed).sum(-1) / top_q.sum(-1).clamp_min(1e-12)
        surrogate = sampled + (sampled - baseline).detach() * score
        out[name] = (top_q * summed).sum(-1) + rest_mass * surrogate
    return out


def marginal_kl(logits: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """KL(q_bar || p(y)) with q_bar = the batch mean of q(y|x): how far the share of points each
    component receives is from the prior's. The ELBO's mean KL(q(y|x) || p(y)) equals the
    mutual information I(x; y) under q plus this term, so weighting it more keeps the aggregate
    posterior near p(y) (no component starved) without asking any one q(y|x) to be uncertain.
    """
    return categorical_kl(log_batch_mean_probs(logits), log_prior)


def log_batch_mean_probs(logits: torch.Tensor) -> torch.Tensor:
    """log q_bar (K,), q_bar the batch mean of softmax(logits) (B, K), in log space."""
    log_q = torch.log_softmax(logits, -1)  # (B, K)
    return torch.logsumexp(log_q, 0) - torch.log(torch.tensor(float(len(logits))))


def categorical_kl(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) for categorical distributions given as log-probabilities (K,)."""
    return (log_q.exp() * (log_q - log_p)).sum()


def evidence_cross_entropy(logits: torch.Tensor, n_labelled: int,
                           novelty: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy (B,) of the soft label "none of the labelled classes", held with
    probability `novelty` (B,) (the labelled rows' estimate of P(new | x),
    susl_cli/label_evidence.py), under q(y|x) with the extra components pooled, on the rows
    that estimate calls more likely new than known:

        -novelty * log sum_{k >= n_labelled} q(k|x)   where novelty > 1/2, else 0,

    in log space (no log 0 when q is confident). The log barrier is what undoes a merge: a row
    the labels call new costs more the more surely q puts it in a labelled component, where a
    share penalty through a sharpened softmax has no gradient left on such rows; which extra
    component takes it is left to the objective.

    Only rows past 1/2: a labelled class's own rows carry novelty 0.1-0.4 from neighbour-count
    noise (MNIST 0-4: 18% of them over 0.3, 7.5% over 0.5; of the hidden classes' rows 95% over
    0.5), and pushed on every row, extra components took a fifth of the known-class points
    over 100 epochs (docs/results.md "Label evidence over long runs"). Weighting the rows past
    1/2 by 2 novelty - 1 instead spared more of them but let Fashion-MNIST 5-9 keep a merge
    (1.41x against 1.14x). One-sided: nothing pulls a row *into* a labelled component, so an
    estimate that mixes a new class with a labelled one cannot teach the merge (measured:
    docs/results.md "Label evidence")."""
    weight = torch.where(novelty > CALLED_NEW, novelty, torch.zeros_like(novelty))
    return -weight * torch.logsumexp(torch.log_softmax(logits, -1)[:, n_labelled:], -1)
