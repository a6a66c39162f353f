"""Short ablation runs on MNIST SUS: train with some settings changed, print label-free and
validation figures, then the test figures.

    python benchmarks/ablation.py --epochs 8 --set alpha=0.5 --set y_estimator=gumbel

Choices are made on the *training* set: components used (label-free) and cluster accuracy of
the unlabelled training points with the mapping fitted on their evaluation-only true labels.
The test figures are printed for the record, never used to choose.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from susl_cli.data.masking import make_masked_dataset, parse_class_spec
from susl_cli.data.sources import load_dataset
from susl_cli.evaluate import evaluate_checkpoint, predict_probs
from susl_cli.experiment import model_setting_keys, parse_settings
from susl_cli.metrics import evaluate_assignments
from susl_cli.runs import load_model, model_options
from susl_cli.storage.masked import read_masked_dataset, write_masked_dataset
from susl_cli.train import train_mask_file

# the model options --set may carry, from the registry (a model's own settings included)
MODEL_FIELDS = {"model", *model_setting_keys()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--classes", default="0-4")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="results/ablation")
    args = parser.parse_args()
    settings = dict(parse_settings(args.set))
    model_opts = {k: v for k, v in settings.items() if k in MODEL_FIELDS}
    train_opts = {k: v for k, v in settings.items() if k not in MODEL_FIELDS}
    train_opts.update(epochs=args.epochs, seed=args.seed)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    mask = work / f"{args.dataset}-{args.classes}.h5"
    if not mask.exists():
        data_dir = os.environ.get("SUSL_DATA_DIR", "../shared/datasets")
        data = load_dataset(args.dataset, data_dir=data_dir)
        n_classes = len(data.class_names)
        write_masked_dataset(mask, make_masked_dataset(
            data, parse_class_spec(args.classes, n_classes), label_fraction=0.2,
            labels_per_class=None, seed=0))
    name = "_".join(f"{k}-{v}" for k, v in sorted(settings.items())) or "default"
    out = work / f"{args.dataset}_{name}_e{args.epochs}_s{args.seed}.h5"
    start = time.time()
    train_mask_file(mask, out, options=model_options(model_opts), train_overrides=train_opts,
                    device="auto", overwrite=True)
    wall = time.time() - start
    run = load_model(out)
    masked = read_masked_dataset(mask, with_true_labels=True)
    unlabelled = masked.y_observed < 0
    comps = predict_probs(run, masked.x_train[unlabelled]).argmax(-1)
    k = run.model_config.n_components
    val = evaluate_assignments(comps, masked.y_train_true[unlabelled], n_components=k,
                               n_classes=masked.n_classes,
                               labelled_classes=run.meta.labelled_classes)
    test = evaluate_checkpoint(out).metrics
    record = {"settings": settings, "epochs": args.epochs, "seed": args.seed,
              "wall_s": round(wall, 1), "threads": torch.get_num_threads(),
              "train_unlabelled": {"components_used": val.n_components_used,
                                   "cluster_acc": val.cluster_acc_majority,
                                   "novel_acc": val.novel_acc_majority,
                                   # known classes' labels only: no hidden label is read
                                   "known_classifier": val.known_acc_classifier,
                                   # label-free: argmax share of the fullest labelled
                                   # component against its prior share, last epoch
                                   "labelled_share": run.history.get(
                                       "labelled_share_ratio", [float("nan")])[-1]},
              "test": {"cluster_acc": test.cluster_acc_majority,
                       "hungarian": test.cluster_acc_hungarian,
                       "known_classifier": test.known_acc_classifier,
                       "novel": test.novel_acc_majority,
                       "components_used": test.n_components_used}}
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
