"""Unlabelled samples/s of gmdgm-mf against GM-DGM, side by side in one process (issue 16).

    OMP_NUM_THREADS=1 python benchmarks/bench_mean_field.py [--repeats 5] [--steps 100]

MNIST, classes 0-4 labelled at 20% (mask seed 0), K = 45, the paper's sizes (200 units,
d_z = 5), batches of 100 unlabelled + 100 labelled points. Each round times the trainer's own
epoch loop (`susl_cli.train._train_epoch`: batch sampling, binarisation, loss, backward, Adam)
over the same `--steps` batches for GM-DGM with exact enumeration over y, GM-DGM with one
Gumbel-softmax sample, GM-DGM with the top-4 estimator (4 components summed, 1 drawn: issue
17), and gmdgm-mf (always exact), in two settings: the SUS step (100
unlabelled + 100 labelled points, what `susl train` does on a SUS mask) and an unlabelled-only
step (100 unlabelled points, as on a US mask: the unlabelled ELBO, its backward and Adam).
Rounds alternate the cases so all see the same machine load; each figure is the median over
`--repeats` rounds after one warm-up round, and the ratio is the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

from susl_cli.cpu_tuning import tune_cpu
from susl_cli.train import SilentObserver, _train_epoch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import _header, _mask, add_data_dir, timing_window  # noqa: E402  (a sibling script, not a package)

CASES = (("gmdgm", "enumerate"), ("gmdgm", "gumbel"), ("gmdgm", "topk"),
         ("gmdgm-mf", "enumerate"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--steps", type=int, default=100, help="steps per timed window")
    add_data_dir(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu()  # what `susl train` does on CPU
    masked, mask_path, tmp = _mask(args.data_dir)
    header = _header(args)
    print(header["line"], flush=True)
    windows = {}
    for model, estimator in CASES:
        run, data = timing_window(masked, mask_path, model, estimator, args.steps)
        windows[("SUS", model, estimator)] = (run, data)
        windows[("unlabelled only", model, estimator)] = (run, replace(
            data, x_labelled=data.x_labelled[:0], y_labelled=data.y_labelled[:0]))
    rates: dict[tuple[str, str, str], list[float]] = {case: [] for case in windows}
    for _ in range(args.repeats + 1):  # the first round warms up
        for case, (run, window) in windows.items():
            rates[case].append(_train_epoch(run, window, SilentObserver())["samples_per_s"])
    rows = []
    for (step, model, estimator), values in rates.items():
        base = rates[(step, "gmdgm", "enumerate")]
        ratios = [v / b for v, b in zip(values[1:], base[1:], strict=True)]
        rows.append({"step": step, "model": model, "estimator": estimator,
                     "samples_per_s": statistics.median(values[1:]),
                     "vs_gmdgm_enumerate": statistics.median(ratios)})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nCommand: `{header['command']}`; load average {os.getloadavg()[0]:.2f} after\n")
    print("| step | model | y | unlabelled samples/s | / GM-DGM enumerate |\n"
          "|---|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['step']} | {r['model']} | {r['estimator']} | {r['samples_per_s']:.0f} | "
              f"{r['vs_gmdgm_enumerate']:.2f}x |")
    tmp.cleanup()


if __name__ == "__main__":
    main()
