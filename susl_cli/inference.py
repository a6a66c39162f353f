"""Running a trained model over raw inputs: q(y|x) and posterior means of z, in batches.

Shared by evaluate, discovery, predict and sample; it imports no module that builds on it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from susl_cli.runs import Run


@torch.no_grad()
def _batched(run: Run, x_raw: np.ndarray, network: Callable[[torch.Tensor], torch.Tensor],
             width: int, batch: int) -> np.ndarray:
    """`network` over raw inputs (N, *input_shape), through the stored input transform.

    The transform is applied a batch at a time, so `x_raw` may also be rows left on disk
    (storage.rows.MaskRows: a streamed run's training inputs) and is never copied whole.
    """
    if len(x_raw) == 0:
        run.transform.apply(x_raw[0:0])  # still refuses inputs of the wrong shape
    device = run.model.log_prior.device
    run.model.eval()
    out = [network(torch.from_numpy(run.transform.apply(x_raw[s:s + batch])).to(device))
           .cpu().numpy() for s in range(0, len(x_raw), batch)]
    return np.concatenate(out) if out else np.zeros((0, width), np.float32)


def predict_probs(run: Run, x_raw: np.ndarray, batch: int = 8192) -> np.ndarray:
    """q(y|x) for raw inputs (N, *input_shape): (N, K)."""
    return _batched(run, x_raw, lambda x: torch.softmax(run.model.classifier_logits(x), -1),
                    run.model_config.n_components, batch)


def embed_points(run: Run, x_raw: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Posterior means E_q(z|x, argmax q(y|x))[z] of raw inputs: (N, latent_dim)."""
    return _batched(run, x_raw, run.model.embed, run.model_config.latent_dim, batch)
