"""Small-data benchmark: susl GM-DGM SUS against KMeans and a Gaussian mixture, same masks.

    python benchmarks/small_data.py [--seeds 2] [--datasets wine,mnist-1500,har-1000]
                                    [--set KEY=VALUE ...] [--preset paper]

Datasets (all SUS, labels on some classes only, 20% of each labelled class's points):
- wine: scikit-learn's wine data (178 rows, 13 features, 3 classes), class 0 labelled;
- mnist-1500: 1,500 random MNIST training images, classes 0-4 labelled;
- har-1000: 1,000 random UCI HAR training windows, window-stats, classes 0-2 labelled.

For each seed the rows (for the slices) and the mask are drawn with that seed. Every method
is scored on the same points, the *unlabelled* training points (the transductive setting of
a user's file without a test set), with each protocol's mapping fitted on those points'
true labels (paper eq 13 majority mapping; one-to-one Hungarian). Training never reads them.

Baselines see the same inputs susl trains on (wine and HAR window-stats standardised, MNIST
grey values reduced to 50 PCA dimensions) but no labels. Each is fitted with k = C (the true
class count) and with k = K (susl's component count); for each protocol the table keeps the
better of the two (majority mapping favours many clusters, Hungarian favours C), i.e. the
strongest baseline, not the one susl beats.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from susl_cli.data.masking import make_masked_dataset
from susl_cli.data.sources import Dataset, load_dataset
from susl_cli.evaluate import predict_probs
from susl_cli.experiment import model_setting_keys, parse_settings
from susl_cli.metrics import evaluate_assignments
from susl_cli.runs import load_model, model_options
from susl_cli.storage.masked import write_masked_dataset
from susl_cli.train import train_mask_file
from susl_cli.window_features import window_features

# the model options --set may carry, from the registry (a model's own settings included)
MODEL_FIELDS = {"model", *model_setting_keys()}
# name -> (loader, labelled classes, feature set stored in the mask)
DATASETS = ("wine", "mnist-1500", "har-1000")


def load_small(name: str, seed: int, data_dir: str) -> tuple[Dataset, tuple[int, ...], str | None]:
    """The dataset (train split only), its labelled classes and its input features."""
    if name == "wine":
        from sklearn.datasets import load_wine
        wine = load_wine()
        data = Dataset("wine", wine.data.astype(np.float32), wine.target.astype(np.int64),
                       None, None, tuple(wine.target_names), "real", "sklearn-load-wine")
        return data, (0,), None
    base, _, rows = name.partition("-")
    full = load_dataset(base, data_dir=Path(data_dir))
    pick = np.sort(np.random.default_rng(seed).choice(len(full.y_train), int(rows),
                                                      replace=False))
    data = Dataset(name, full.x_train[pick], full.y_train[pick], None, None, full.class_names,
                   full.input_kind, f"{full.source_checksum}:rows-seed-{seed}")
    half = tuple(range(full.n_classes // 2))
    return data, half, ("window-stats" if base == "har" else None)


def baseline_inputs(data: Dataset, features: str | None) -> np.ndarray:
    """What the baselines cluster: standardised features, or 50 PCA dimensions of images."""
    if features == "window-stats":
        x = window_features(data.x_train)
    else:
        x = data.x_train.reshape(len(data.x_train), -1)
    if data.input_kind == "image":
        return PCA(50, random_state=0).fit_transform(x)
    return StandardScaler().fit_transform(x)


def score(components: np.ndarray, true: np.ndarray, k: int, n_classes: int,
          labelled: tuple[int, ...]) -> dict[str, float]:
    m = evaluate_assignments(components, true, n_components=k, n_classes=n_classes,
                             labelled_classes=labelled)
    return {"majority": m.cluster_acc_majority, "hungarian": m.cluster_acc_hungarian,
            "used": m.n_components_used,
            # the labelled classes' rows that susl's classifier names right (meaningful for
            # susl only: a clustering's components have no classes)
            "known": m.known_acc_classifier}


def run_baselines(x: np.ndarray, true: np.ndarray, scored: np.ndarray, n_classes: int,
                  n_components: int, labelled: tuple[int, ...], seed: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name, make in (("KMeans", lambda k: KMeans(k, n_init=10, random_state=seed)),
                       ("GaussianMixture (full)", lambda k: GaussianMixture(
                           k, covariance_type="full", reg_covar=1e-3, n_init=3,
                           random_state=seed))):
        best: dict[str, float] = {}
        for k in sorted({n_classes, min(n_components, len(x) // 4)}):
            comps = make(k).fit(x).predict(x)[scored]
            s = score(comps, true[scored], k, n_classes, labelled)
            for metric in ("majority", "hungarian"):
                if s[metric] > best.get(metric, -1):
                    best[metric], best[f"{metric}_k"] = s[metric], k
        out[name] = best
    return out


def run_susl(data: Dataset, labelled: tuple[int, ...], features: str | None, seed: int,
             settings: dict, preset: str | None, work: Path) -> dict:
    masked = make_masked_dataset(data, labelled, label_fraction=0.2, seed=seed,
                                 input_features=features)
    mask = work / f"{data.name}-s{seed}.h5"
    write_masked_dataset(mask, masked, overwrite=True)
    model_opts = {k: v for k, v in settings.items() if k in MODEL_FIELDS}
    train_opts = {k: v for k, v in settings.items() if k not in MODEL_FIELDS}
    train_opts["seed"] = seed
    out = work / f"{data.name}-s{seed}-run.h5"
    start = time.time()
    train_mask_file(mask, out, options=model_options(model_opts), train_overrides=train_opts,
                    preset=preset, device="cpu", overwrite=True)
    run = load_model(out)
    scored = masked.y_observed < 0
    comps = predict_probs(run, data.x_train[scored]).argmax(-1)
    k = run.model_config.n_components
    result = score(comps, data.y_train[scored], k, data.n_classes, labelled)
    result.update(K=k, seconds=time.time() - start, epochs=run.epoch,
                  share=run.history["labelled_share_ratio"][-1], scored=scored,
                  choice=run.meta.auto_choice or "")
    return result


def mean_sd(values: list[float]) -> str:
    a = 100 * np.asarray(values)
    return f"{a.mean():.1f} ± {a.std(ddof=1) if len(a) > 1 else 0:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--workdir", default="results/small-data")
    parser.add_argument("--json", action="store_true", help="also print one JSON line per run")
    args = parser.parse_args()
    settings = dict(parse_settings(args.set))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    data_dir = os.environ.get("SUSL_DATA_DIR", "../shared/datasets")
    rows = []
    for name in args.datasets.split(","):
        per_method: dict[str, dict[str, list[float]]] = {}
        extra: dict[str, list[float]] = {"used": [], "share": [], "seconds": [], "known": []}
        for seed in range(args.seeds):
            data, labelled, features = load_small(name, seed, data_dir)
            susl = run_susl(data, labelled, features, seed, settings, args.preset, work)
            x = baseline_inputs(data, features)
            base = run_baselines(x, data.y_train, susl["scored"], data.n_classes, susl["K"],
                                 labelled, seed)
            results = {"susl GM-DGM": susl, **base}
            for method, r in results.items():
                slot = per_method.setdefault(method, {"majority": [], "hungarian": []})
                slot["majority"].append(r["majority"])
                slot["hungarian"].append(r["hungarian"])
            for key in extra:
                extra[key].append(susl[key])
            if args.json:
                print(json.dumps({"dataset": name, "seed": seed, **{
                    m: {k: v for k, v in r.items() if k != "scored"}
                    for m, r in results.items()}}, default=float), flush=True)
        susl_note = (f"{np.mean(extra['used']):.1f} of {susl['K']} components used, labelled "
                     f"share {np.mean(extra['share']):.2f}x, known classes named "
                     f"{100 * np.mean(extra['known']):.1f}%, {susl['epochs']} epochs, "
                     f"{np.mean(extra['seconds']):.0f} s")
        for method, slot in per_method.items():
            note = susl_note if method.startswith("susl") else "best of k = C, K"
            rows.append(f"| {name} | {method} | {mean_sd(slot['majority'])} | "
                        f"{mean_sd(slot['hungarian'])} | {note} |")
    print("| data | method | majority % | Hungarian % | notes |")
    print("|---|---|---:|---:|---|")
    print("\n".join(rows))
    print(f"\nGenerated by `python benchmarks/small_data.py {' '.join(sys.argv[1:])}` "
          f"({args.seeds} seeds; mean ± sd; unlabelled training points scored).")


if __name__ == "__main__":
    main()
