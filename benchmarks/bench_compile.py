"""Does torch.compile speed up susl's training step here? Eager against compiled (issue 17).

    python benchmarks/bench_compile.py [--threads 2] [--steps 30] [--repeats 3] [--device cpu]

MNIST, classes 0-4 labelled at 20% (mask seed 0), K = 45, the paper's sizes (200 units,
d_z = 5), GM-DGM with each y estimator. Each case times the trainer's own epoch loop
(`susl_cli.train._train_epoch`) over `--steps` batches of 100 unlabelled + 100 labelled
points: `--repeats` eager windows, then the model compiled in place (`nn.Module.compile`, the
default inductor backend), one warm-up window whose time is reported as the compile cost, and
`--repeats` compiled windows. Medians of unlabelled samples/s. A failure to compile is
printed, not hidden. The answer decides whether `susl train` compiles: it does not, because
on the 2-core CPU this was measured on compiled steps were slower (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from susl_cli.cpu_tuning import tune_cpu
from susl_cli.train import SilentObserver, _train_epoch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import _header, _mask, add_data_dir, timing_window  # noqa: E402  (a sibling script, not a package)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--estimators", nargs="+", default=["enumerate", "topk", "gumbel"])
    add_data_dir(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu()
    device = torch.device(args.device)
    masked, mask_path, tmp = _mask(args.data_dir)
    header = _header(args)
    print(header["line"], flush=True)
    rows = []
    for estimator in args.estimators:
        run, data = timing_window(masked, mask_path, "gmdgm", estimator, args.steps,
                                  device=device)

        def window(run=run, data=data) -> float:
            return _train_epoch(run, data, SilentObserver())["samples_per_s"]

        eager = statistics.median(window() for _ in range(args.repeats))
        start = time.perf_counter()
        try:
            run.model.compile()
            window()  # compiles on its first steps
        except Exception as err:  # noqa: BLE001  (the benchmark reports any failure)
            print(f"{estimator}: torch.compile failed: {type(err).__name__}: {err}"[:400])
            continue
        warm_up = time.perf_counter() - start
        compiled = statistics.median(window() for _ in range(args.repeats))
        rows.append((estimator, eager, compiled, warm_up))
        print(f"{estimator}: eager {eager:.0f}, compiled {compiled:.0f} samples/s", flush=True)
    print(f"\nCommand: `{header['command']}`\n")
    print("| y estimator | eager samples/s | compiled samples/s | compiled / eager | "
          "compile warm-up s |\n|---|---:|---:|---:|---:|")
    for estimator, eager, compiled, warm_up in rows:
        print(f"| {estimator} | {eager:.0f} | {compiled:.0f} | {compiled / eager:.2f}x | "
              f"{warm_up:.0f} |")
    tmp.cleanup()


if __name__ == "__main__":
    main()
