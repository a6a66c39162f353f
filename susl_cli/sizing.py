"""Settings chosen from the data when the user leaves them unset (`susl train` without a preset).

The paper's settings (40 extra components, batch 100, 400 epochs, the plain objective) were
tuned on tens of thousands of rows. On a few hundred to a few thousand rows they give too few
optimisation steps and far more components than points can fill (wine, 178 rows: 15 of 41
components used, 79.8% against KMeans' 97.6%; benchmarks/small_data.py). The rules:

- marginal KL weight 1 at every size: measured better or neutral on MNIST, Fashion-MNIST
  and HAR SUS, and the starved-component failure it prevents is worse on small data;
- from SMALL_ROWS unlabelled points up, y estimator "topk" for the models that sum over y
  (the 4 most probable components exactly, one drawn from the rest: unbiased, and the decoder
  runs on 5 label settings, not K): on MNIST SUS an epoch costs ~1/3 of exact enumeration's
  and scores ~3 points less (8 epochs, 2 seeds), so for the same time it is far ahead: 92.5%
  majority in 155 s of training against ~17 minutes enumerating (benchmarks/README.md);
- below SMALL_ROWS unlabelled points,
  - model gmdgm-mf (GM-DGM's generative model with the mean-field posterior q(y|x) q(z|x)):
    exact in y at the cost of one decoder pass, so a step costs a fraction of GM-DGM's and
    the run can afford MEAN_FIELD_STEPS steps; on benchmarks/small_data.py (2 seeds) it
    scored 75.0 / 86.0 / 97.3% majority on MNIST-1,500 / HAR-1,000 / wine against GM-DGM's
    73.8 / 83.9 / 95.2% at the same 3,000 steps, in 8-34 s per run against GM-DGM's 49-904 s
    (the small-data tables of docs/results.md; the machine's load varied);
  - latent size SMALL_LATENT (the configs' default is 5, Table A.1's MNIST size): 78.0 / 86.4%
    against 75.0 / 86.0% on MNIST-1,500 / HAR-1,000 (wine: within its seed noise);
  - extra components: one per POINTS_PER_EXTRA unlabelled points, between 4 and 40;
  - batch size (unlabelled and labelled): N_u / 10, between 16 and 100, so an epoch has
    at least ~10 steps;
  - epochs: enough for TARGET_STEPS steps (MEAN_FIELD_STEPS with gmdgm-mf; at most
    MAX_EPOCHS): steps matter, not epochs. gmdgm-mf with latent 10 at 3,000 / 6,000 / 12,000
    steps: 78.0 / 81.8 / 82.3% on MNIST-1,500, 86.4 / 87.4 / 89.3% on HAR-1,000.

Every value the user sets wins; `--preset paper` skips all of this. Each choice comes back
with its reason, which `susl train` prints in its summary and stores in the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SMALL_ROWS = 10_000  # unlabelled training points below which the small-data rules apply
POINTS_PER_EXTRA = 20
MIN_EXTRA, MAX_EXTRA = 4, 40  # 40: the paper's n_aug
MIN_BATCH, MAX_BATCH = 16, 100
TARGET_STEPS = 3_000  # a model that enumerates y with K decoder passes (gmdgm, m2, ...)
MEAN_FIELD_STEPS = 12_000  # gmdgm-mf: one decoder pass a step
MAX_EPOCHS = 2_000  # only bounds very small sets (30 rows: 2 steps an epoch)
SMALL_MODEL = "gmdgm-mf"
SMALL_LATENT = 10
MARGINAL_KL = 1.0
LARGE_Y_ESTIMATOR = "topk"
LABEL_EVIDENCE = 10.0  # weight of the known/new targets from the labelled rows (see below)


@dataclass(frozen=True)
class SizeChoice:
    """Values for the fields the user left unset, and one reason per chosen value."""

    train: dict[str, object]
    extra_components: int | None
    reasons: tuple[str, ...]
    model: str | None = None  # set when the user left --model unset
    settings: dict[str, object] = field(default_factory=dict)  # model settings chosen


def choose_by_size(n_unlabelled: int, has_hidden: bool, user_train: dict[str, object],
                   user_extra: int | None, has_labelled: bool = True,
                   user_model: str | None = None,
                   user_settings: frozenset[str] = frozenset()) -> SizeChoice:
    """The data-size rules above for a mask with `n_unlabelled` unlabelled training points.

    `has_hidden`: some component is offered to unlabelled classes (SUS or US), so the number
    of extra components is ours to choose. `user_model` (None: unset) and `user_settings`
    (the model settings the user set) are left as they are.
    """
    train: dict[str, object] = {}
    reasons: list[str] = []
    if "marginal_kl" not in user_train:
        train["marginal_kl"] = MARGINAL_KL
        reasons.append(f"marginal KL {MARGINAL_KL:g}: keeps components in use (README Choices)")
    if has_labelled and has_hidden and n_unlabelled and "label_evidence" not in user_train:
        train["label_evidence"] = LABEL_EVIDENCE
        reasons.append(f"label evidence {LABEL_EVIDENCE:g}: rows your labelled rows call new "
                       "are kept out of the labelled classes (README Choices)")
    extra = None
    if n_unlabelled >= SMALL_ROWS and "y_estimator" not in user_train \
            and user_model != SMALL_MODEL:  # gmdgm-mf is exact in y with one decoder pass
        train["y_estimator"] = LARGE_Y_ESTIMATOR
        reasons.append(f"y estimator {LARGE_Y_ESTIMATOR}: the most probable components summed, "
                       "one drawn from the rest; ~3x faster epochs than enumerating "
                       f"({n_unlabelled} unlabelled points >= {SMALL_ROWS}; README Choices)")
    if n_unlabelled >= SMALL_ROWS or n_unlabelled == 0:
        return SizeChoice(train, extra, tuple(reasons))
    small = f"{n_unlabelled} unlabelled points < {SMALL_ROWS}"
    model, settings = None, {}
    if user_model is None:
        model = SMALL_MODEL
        reasons.append(f"model {model}: exact in y with one decoder pass a step, so more "
                       f"steps for the time ({small})")
    if "latent_dim" not in user_settings:
        settings["latent_dim"] = SMALL_LATENT
        reasons.append(f"latent size {SMALL_LATENT} ({small})")
    if has_hidden and user_extra is None:
        extra = int(min(max(n_unlabelled // POINTS_PER_EXTRA, MIN_EXTRA), MAX_EXTRA))
        reasons.append(f"{extra} extra components: one per {POINTS_PER_EXTRA} unlabelled "
                       f"points ({small})")
    batch = user_train.get("batch_size")
    if batch is None:
        batch = int(min(max(n_unlabelled // 10, MIN_BATCH), MAX_BATCH))
        train["batch_size"] = batch
        if "labelled_batch_size" not in user_train:
            train["labelled_batch_size"] = batch
        reasons.append(f"batch {batch}: about 10 steps per epoch ({small})")
    if "epochs" not in user_train:
        steps = math.ceil(n_unlabelled / int(batch))  # type: ignore[call-overload]
        target = MEAN_FIELD_STEPS if (model or user_model) == SMALL_MODEL else TARGET_STEPS
        epochs = int(min(math.ceil(target / steps), MAX_EPOCHS))
        train["epochs"] = epochs
        reasons.append(f"{epochs} epochs: about {target} optimisation steps ({small})")
    return SizeChoice(train, extra, tuple(reasons), model, settings)
