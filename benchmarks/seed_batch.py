"""Wall time of S seeds trained as one batched model against the same S seeds one by one.

    OMP_NUM_THREADS=1 python benchmarks/seed_batch.py [--seeds 4] [--steps 10] [--repeats 3]

MNIST, classes 0-4 labelled at 20% (mask seed 0), K = 45, the paper's sizes (200 units,
d_z = 5; `--hidden-units` for smaller nets, where per-step overhead weighs more), batches of
100 unlabelled + 100 labelled points. Each round times `--steps` steps of every seed, two
ways, on the same threads:
- one by one: the trainer's own epoch loop (`susl_cli.train._train_epoch`) for seed 0, then
  seed 1, ...: what S separate processes cost in CPU time (each process does exactly this);
- batched: one epoch loop of `susl_cli.seed_batch` over all S seeds (one vmapped step each).
Rounds alternate the two so both see the same machine load; each figure is the median over
`--repeats` rounds after a warm-up round, the speed-up the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from susl_cli.config import ObjectiveConfig, TrainConfig
from susl_cli.cpu_tuning import tune_cpu
from susl_cli.runs import ModelOptions, new_run
from susl_cli.seed_batch import SeedBatch
from susl_cli.seed_batch import _train_epoch as batched_epoch
from susl_cli.train import SilentObserver, _train_epoch, prepare_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import _header, _mask, add_data_dir  # noqa: E402  (a sibling script, not a package)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="steps per seed and window")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="gmdgm")
    parser.add_argument("--estimator", default="enumerate")
    parser.add_argument("--hidden-units", type=int, default=200, help="paper: 200")
    add_data_dir(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu()  # what `susl train` does on CPU
    masked, mask_path, tmp = _mask(args.data_dir)
    header = _header(args)
    print(header["line"], flush=True)
    runs, datas = [], []
    for seed in range(args.seeds):
        config = TrainConfig(epochs=10**6, seed=seed)
        run = new_run(masked, mask_path, ModelOptions(model=args.model, settings={
            "hidden_units": args.hidden_units, "latent_dim": 5}), config, torch.device("cpu"),
            ObjectiveConfig(y_estimator=args.estimator))
        data = prepare_data(run, masked.x_train, masked.y_observed, torch.device("cpu"))
        runs.append(run)
        datas.append(replace(data, x_unlabelled=data.x_unlabelled[
            :args.steps * config.batch_size]))
    batch = SeedBatch(runs)
    times: dict[str, list[float]] = {"one by one": [], "batched": []}
    for _ in range(args.repeats + 1):  # the first round warms up
        start = time.perf_counter()
        for run, data in zip(runs, datas, strict=True):
            _train_epoch(run, data, SilentObserver())
        times["one by one"].append(time.perf_counter() - start)
        start = time.perf_counter()
        batched_epoch(batch, datas, SilentObserver())
        times["batched"].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(times["one by one"][1:], times["batched"][1:], strict=True)]
    row = {"seeds": args.seeds, "steps": args.steps, "model": args.model,
           "estimator": args.estimator, "hidden_units": args.hidden_units,
           "threads": args.threads,
           **{f"{k} s": round(statistics.median(v[1:]), 3) for k, v in times.items()},
           "speed-up": round(statistics.median(ratios), 2)}
    print(json.dumps(row), flush=True)
    print(f"Command: `{header['command']}`; load average {os.getloadavg()[0]:.2f} after")
    tmp.cleanup()


if __name__ == "__main__":
    main()
