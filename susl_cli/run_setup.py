"""Setting up a training run from a mask file: the output checks, the preset or data-size
settings, and the checks a resumed run must pass (split from train.py, which holds the loop)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from susl_cli.config import PAPER_PRESETS, split_settings
from susl_cli.distributed import World
from susl_cli.errors import ConfigError, OutputError, UsageError
from susl_cli.runs import ModelOptions, Run, load_model, new_run
from susl_cli.sizing import choose_by_size
from susl_cli.storage.files import check_output_path, claim_output
from susl_cli.storage.h5 import peek_kind
from susl_cli.storage.masked import MaskedDataset, file_sha256, read_masked_dataset
from susl_cli.storage.rows import MaskRows
from susl_cli.training_data import plan_data
from susl_cli.training_log import history_csv_path


def prepare_run(mask_path: Path, out_path: Path, options: ModelOptions,
             train_overrides: dict[str, object], preset: str | None, torch_device: torch.device,
             resume: bool, overwrite: bool, world: World, stream: bool | None = None
             ) -> tuple[Run, MaskedDataset]:
    """Check the output, read the mask, build or load the run (process 0 claims OUT).

    Before the mask's inputs are read, `plan_data` decides (or `stream` forces) whether they
    are held in memory or left in the file (then masked.x_train is an open MaskRows: the
    caller closes it); the decision is recorded in run.meta.data_path for the summary.
    """
    if world.is_main:
        claim_output(out_path)  # one writer per checkpoint: a second `susl train -o OUT` is refused
    if resume:
        if not out_path.exists():
            raise UsageError(
                f"nothing to resume: {str(out_path)!r} does not exist (a run stopped before its "
                "first epoch was saved leaves no checkpoint): start it again without --resume"
            )
        peek_kind(out_path)  # a clear message when OUT is not a checkpoint
    else:
        if out_path.is_file() and not overwrite:
            raise OutputError(f"{str(out_path)!r} already exists: pass --resume to continue the "
                              "run it holds, or --overwrite to replace it")
        check_output_path(out_path, overwrite, inputs=(mask_path,), claim=world.is_main)
    # the per-epoch log beside the checkpoint: checked (not an input, not a folder, a FIFO or a
    # link) and locked like the checkpoint; it belongs to OUT, so it is replaced without asking
    check_output_path(history_csv_path(out_path), True, inputs=(mask_path,),
                      claim=world.is_main)
    plan = plan_data(mask_path, torch_device, stream)
    # observed labels only: never the true ones
    masked = read_masked_dataset(mask_path, stream_cache_bytes=plan.cache_bytes
                                 if plan.streamed else None)
    try:
        if resume:
            run = resume_run(mask_path, out_path, options, train_overrides, torch_device)
        else:
            options, settings, reasons = apply_preset(preset, masked, options, train_overrides)
            objective, train_config = split_settings(settings)
            run = new_run(masked, mask_path, options, train_config, torch_device, objective)
            run.meta.auto_choice = list(reasons)  # stored in the checkpoint, shown by train
    except BaseException:
        if isinstance(masked.x_train, MaskRows):
            masked.x_train.close()
        raise
    run.meta.data_path = plan.describe()
    return run, masked


def apply_preset(preset: str | None, masked: MaskedDataset, options: ModelOptions,
                  overrides: dict[str, object]) -> tuple[ModelOptions, dict[str, object], tuple]:
    """(options, training settings, reasons): the user's values, then the preset's or the
    data-size rules' (susl_cli/sizing.py); the configs' defaults fill in the rest."""
    dataset = masked.metadata.dataset
    values: dict[str, object] = {}
    reasons: tuple[str, ...] = ()
    if preset in (None, "default"):
        n_unlabelled = int(np.count_nonzero(masked.y_observed < 0))
        # labels as given: classes nobody labelled may exist, so extra components are offered
        has_hidden = (bool(masked.hidden_classes) or not masked.labelled_classes
                      or masked.metadata.label_source == "as-given")
        choice = choose_by_size(n_unlabelled, has_hidden, overrides, options.extra_components,
                                has_labelled=bool(masked.labelled_classes),
                                user_model=options.model,
                                user_settings=frozenset(options.settings))
        values = dict(choice.train)
        reasons = choice.reasons
        if choice.extra_components is not None:
            options = dataclasses.replace(options, extra_components=choice.extra_components)
        if choice.model is not None:
            options = dataclasses.replace(options, model=choice.model)
        options = dataclasses.replace(options, settings={**choice.settings, **options.settings})
    elif preset == "paper":
        if dataset not in PAPER_PRESETS:
            raise ConfigError(f"--preset paper has values for {', '.join(PAPER_PRESETS)}, "
                              f"not {dataset!r}: set the sizes yourself")
        p = PAPER_PRESETS[dataset]
        values = {"batch_size": p.batch_size, "labelled_batch_size": p.batch_size,
                  "learning_rate": p.learning_rate, "marginal_kl": 0.0}  # paper's objective

        sizes = {"latent_dim": p.latent_dim, "hidden_units": p.hidden_units}
        options = dataclasses.replace(options, settings={**sizes, **options.settings})
    else:
        raise ConfigError(f"unknown --preset {preset!r}: use paper or default")
    return options, {**values, **overrides}, reasons


# What `--resume` may change: the length of the run and how often it is saved.
RESUMABLE_SETTINGS = ("epochs", "checkpoint_every", "checkpoint_seconds")


def resume_run(mask_path: Path, out_path: Path, options: ModelOptions,
            overrides: dict[str, object], device: torch.device) -> Run:
    run = load_model(out_path, device, with_optimizer=True)
    if run.meta.mask_sha256 != file_sha256(mask_path):
        raise ConfigError(f"{str(out_path)!r} was trained on another mask file "
                          f"({run.meta.mask_file!r}): resume with that file, or start a new "
                          "run with --overwrite")
    if options.model and options.model != run.model_config.model:
        raise ConfigError(f"{str(out_path)!r} holds a {run.model_config.model} model, not "
                          f"{options.model}: drop --model or start a new run")
    stored = {**dataclasses.asdict(run.model.objective), **dataclasses.asdict(run.train_config)}
    changed = sorted(k for k, v in overrides.items()
                     if k not in RESUMABLE_SETTINGS and stored.get(k) != v)
    if changed:
        raise ConfigError(f"--resume continues the stored settings; these cannot change: "
                          f"{', '.join(changed)}")
    finished = run.epoch >= run.train_config.epochs
    run.train_config = dataclasses.replace(run.train_config, **{  # type: ignore[arg-type]
        k: v for k, v in overrides.items() if k in RESUMABLE_SETTINGS})
    if run.epoch >= run.train_config.epochs:
        raise ConfigError(f"{str(out_path)!r} already finished {run.epoch} epochs: "
                          f"give --epochs above {run.epoch} to train longer (a warm restart)")
    if finished:  # extended on purpose: a new cosine cycle over the added epochs
        run.train_config = dataclasses.replace(run.train_config, lr_cycle_start=run.epoch)
    run.model.train()
    return run
