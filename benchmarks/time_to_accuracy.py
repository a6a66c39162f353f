"""Time to accuracy: wall time until a SUS run reaches a target majority accuracy.

    python benchmarks/time_to_accuracy.py --dataset mnist --target 0.925 --epochs 40 \
        --runs gmdgm-mf gmdgm:gumbel --seeds 2 [--set marginal_kl=1] [--threads 2]

Each run masks the dataset as the paper does (the first half of the classes labelled at 20%,
mask seed = training seed) and trains with the schedule of `--epochs` epochs (cosine decay over
that many), stopping at the first epoch whose majority accuracy on the TRAINING points reaches
`--target`. That check fits the majority mapping on the training points' evaluation-only labels
(stored in the mask, never seen by training); the test labels take no part in the decision. The
test accuracy of the model at the stopping epoch is printed beside it, for reference.

"Seconds" counts training only (the epochs' own time, end-of-epoch diagnostics included); the
per-epoch check is not counted. A run that never reaches the target reports its best training
accuracy and the time of all its epochs. Runs take a model, optionally ":estimator" for the
models that have a y-estimator (gmdgm:gumbel). The numbers are measured on the machine it runs on.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from susl_cli.cpu_tuning import tune_cpu_for
from susl_cli.data.masking import make_masked_dataset
from susl_cli.data.sources import load_dataset
from susl_cli.distributed import SINGLE
from susl_cli.experiment import model_setting_keys, parse_settings
from susl_cli.inference import predict_probs
from susl_cli.metrics import evaluate_assignments
from susl_cli.run_setup import prepare_run
from susl_cli.runs import model_options
from susl_cli.storage.masked import read_masked_dataset, write_masked_dataset
from susl_cli.train import SilentObserver, fit
from susl_cli.training_data import prepare_data

# the model options --set may carry, from the registry (a model's own settings included)
MODEL_FIELDS = {"model", *model_setting_keys()}


class StopAtTarget(SilentObserver):
    """After every epoch: the training points' majority accuracy; stop once at the target."""

    def __init__(self, run, masked, target: float) -> None:
        self.run, self.masked, self.target = run, masked, target
        self.train_seconds = 0.0
        self.epochs: list[tuple[int, float, float]] = []  # (epoch, seconds so far, accuracy)

    def epoch_finished(self, record: dict[str, float]) -> None:
        self.train_seconds += record["seconds"]
        acc = majority(self.run, self.masked)
        self.epochs.append((int(record["epoch"]), self.train_seconds, acc))
        print(f"  epoch {int(record['epoch'])}: {self.train_seconds:.0f} s, training majority "
              f"{100 * acc:.1f}%", flush=True)
        if acc >= self.target:
            raise ReachedTarget


class ReachedTarget(Exception):
    pass


def majority(run, masked, on_test: bool = False) -> float:
    """Majority accuracy with the mapping fitted on the training points' evaluation-only
    labels: scored on those points (the stopping rule) or on the test set (`on_test`)."""
    fit_components = predict_probs(run, masked.x_train).argmax(-1)
    scored, truth = ((predict_probs(run, masked.x_test).argmax(-1), masked.y_test) if on_test
                     else (fit_components, masked.y_train_true))
    return evaluate_assignments(scored, truth, n_components=run.model_config.n_components,
                                n_classes=len(run.meta.class_names),
                                labelled_classes=run.meta.labelled_classes,
                                fit_components=fit_components,
                                fit_true=masked.y_train_true).cluster_acc_majority


def one_run(data, spec: str, seed: int, args, settings: dict, work: Path) -> dict:
    model, _, estimator = spec.partition(":")
    mask = work / f"{data.name}-s{seed}.h5"
    if not mask.exists():
        labelled = tuple(range(data.n_classes // 2))
        write_masked_dataset(mask, make_masked_dataset(data, labelled, label_fraction=0.2,
                                                       seed=seed))
    chosen = {**settings, "model": model, **({"y_estimator": estimator} if estimator else {})}
    run, masked = _prepare(mask, work, chosen, args, seed)
    scored = read_masked_dataset(mask, with_true_labels=True)
    data_t = prepare_data(run, masked.x_train, masked.y_observed, torch.device("cpu"))
    observer = StopAtTarget(run, scored, args.target)
    try:
        fit(run, data_t, None, observer)
        reached = False
    except ReachedTarget:
        reached = True
    best = max(acc for _, _, acc in observer.epochs)
    return {"run": spec, "seed": seed, "reached": reached, "epochs": run.epoch,
            "seconds": observer.train_seconds, "train_acc": best,
            "test_acc": majority(run, scored, on_test=True)}


def _prepare(mask: Path, work: Path, chosen: dict, args, seed: int):
    """The run `susl train` would start (its output path is never written: fit gets None)."""
    return prepare_run(mask, work / "unused.h5",
                       model_options({k: v for k, v in chosen.items() if k in MODEL_FIELDS}),
                       {**{k: v for k, v in chosen.items() if k not in MODEL_FIELDS},
                        "epochs": args.epochs, "seed": seed},
                       args.preset, torch.device("cpu"), False, True, SINGLE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--target", type=float, default=0.925)
    parser.add_argument("--epochs", type=int, default=40, help="schedule length and limit")
    parser.add_argument("--runs", nargs="+", default=["gmdgm-mf", "gmdgm:gumbel"])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu_for("cpu")  # what `susl train` does on a CPU
    settings = dict(parse_settings(args.set))
    data = load_dataset(args.dataset,
                        data_dir=Path(os.environ.get("SUSL_DATA_DIR", "../shared/datasets")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.runs:
            for seed in range(args.seeds):
                print(f"{spec}, seed {seed}", flush=True)
                start = time.time()
                rows.append(one_run(data, spec, seed, args, settings, Path(tmp)))
                print(f"  done in {time.time() - start:.0f} s wall", flush=True)
    print(f"\n| run | seed | reached {100 * args.target:.1f}% | epochs | training seconds | "
          "training majority % | test majority % |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['seed']} | {'yes' if r['reached'] else 'no'} | {r['epochs']} | "
              f"{r['seconds']:.0f} | {100 * r['train_acc']:.1f} | {100 * r['test_acc']:.1f} |")
    for spec in args.runs:
        mine = [r for r in rows if r["run"] == spec]
        seconds = [r["seconds"] for r in mine if r["reached"]]
        text = (f"mean {np.mean(seconds):.0f} s over {len(seconds)} of {len(mine)} seeds"
                if seconds else f"not reached in {args.epochs} epochs")
        print(f"\n{spec}: {text}")
    print(f"\nGenerated by `python benchmarks/time_to_accuracy.py {' '.join(sys.argv[1:])}` "
          f"on {torch.get_num_threads()} thread(s).")


if __name__ == "__main__":
    main()
