"""Discovery on a trained run: compute it from the run's training points, store it in the
checkpoint, and read it back for predict, evaluate, sample and info."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from susl_cli.discover import Discovery, DiscoveryOptions, discover_classes, no_discovery
from susl_cli.inference import embed_points, predict_probs
from susl_cli.runs import Run, check_run_mask, load_model, run_mask_file, save_run
from susl_cli.storage.files import claim_output
from susl_cli.storage.masked import read_masked_dataset


def labelled_names(run: Run) -> list[str]:
    """Names of the labelled classes, in component order (component j is the j-th of them)."""
    return run.meta.labelled_names()


def discover_run(run: Run, x_train: np.ndarray,
                 options: DiscoveryOptions = DiscoveryOptions()) -> Discovery:
    """Group the run's extra components using its training inputs (no labels are read)."""
    n_labelled = run.model_config.n_labelled
    if run.model_config.n_components == n_labelled:
        return no_discovery(n_labelled, labelled_names(run))
    probs = predict_probs(run, x_train)
    # the posterior means of z cost another pass of the encoders: only the latent distance
    # needs them
    embedding = embed_points(run, x_train) if options.method == "latent" else None
    return discover_classes(embedding, probs, labelled_names(run), options)


def stored_discovery(run: Run) -> Discovery | None:
    data = run.meta.discovery
    return Discovery.from_json(data) if isinstance(data, dict) else None


def discovery_of(run: Run, checkpoint: Path, mask: Path | None = None) -> tuple[Discovery, str]:
    """The run's stored discovery, else one computed now from its mask file; and its source."""
    stored = stored_discovery(run)
    if stored is not None:
        return stored, f"stored in the checkpoint ({stored.method})"
    x_train = read_run_training_inputs(run, checkpoint, mask)
    discovery = discover_run(run, x_train)
    return discovery, ("computed now from the training points (the run has none stored: "
                       f"`susl discover {checkpoint}` stores it)")


def read_run_training_inputs(run: Run, checkpoint: Path, mask: Path | None = None
                             ) -> np.ndarray:
    """The training inputs of the mask file the run was trained on (checked by its sha256,
    `--mask` included: discovery must group the components on the run's own points)."""
    path, sha = run_mask_file(run, Path(checkpoint), mask, option="--mask")
    if mask is not None:  # run_mask_file takes an explicit file as is: it must be the run's
        check_run_mask(run, Path(checkpoint), path, sha, option="--mask")
    return read_masked_dataset(path).x_train


def rediscover_checkpoint(checkpoint: Path, options: DiscoveryOptions,
                          mask: Path | None = None) -> Discovery:
    """Recompute the discovery of a checkpoint with `options` and store it (atomic rewrite)."""
    claim_output(Path(checkpoint))  # it rewrites the checkpoint: not while `train` writes it
    run = load_model(Path(checkpoint), with_optimizer=True)
    discovery = discover_run(run, read_run_training_inputs(run, Path(checkpoint), mask), options)
    store_discovery(run, Path(checkpoint), discovery)
    return discovery


def store_discovery(run: Run, checkpoint: Path, discovery: Discovery) -> None:
    run.meta.discovery = discovery.to_json()
    # a run loaded from disk says whether it finished; one just trained has finished when its
    # epochs are done
    completed = run.meta.completed
    if completed is None:  # never saved yet
        completed = run.epoch >= run.train_config.epochs
    save_run(run, checkpoint, completed=completed)
