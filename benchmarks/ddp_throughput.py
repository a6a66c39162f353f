"""Training throughput of one process against two DDP processes (torchrun, gloo) on the CPU.

    python benchmarks/ddp_throughput.py [--rows 3000] [--epochs 2] [--out FILE.json]

MNIST SUS (classes 0-4 labelled at 20%, mask seed 0) on a random subset of `--rows`
training images; GM-DGM with the reference code's size (500 hidden units, d_z = 100), exact
enumeration over K = 45 components, global batch 100 unlabelled + 100 labelled. Three runs of
`susl train`, one after the other, each trained `--epochs` epochs:
  1 process x 1 thread, 2 processes x 1 thread (torchrun), 1 process x 2 threads.
The figure is the last epoch's unlabelled samples/s from the checkpoint history (the first
epoch carries start-up); the speed-up is the 2-process figure over the 1-process, 1-thread
one (what DDP adds with one core per process), and over the 1-process, 2-thread one (the
other way to use two cores). Both runs follow the same trajectory (tests/test_distributed.py).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIZE = ["--model", "gmdgm", "--hidden-units", "500", "--latent-dim", "100", "--batch-size",
        "100", "--labelled-batch-size", "100", "--device", "cpu", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(mask: Path, out: Path, epochs: int, processes: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    susl = ["-m", "susl_cli", "train", str(mask), *SIZE, "--epochs", str(epochs), "--out",
            str(out)]
    launcher = [] if processes == 1 else [
        "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
        "127.0.0.1", "--master_port", str(_free_port())]
    start = time.perf_counter()
    subprocess.run([sys.executable, *launcher, *susl], check=True, env=env)
    wall = time.perf_counter() - start
    from susl_cli.runs import load_model

    history = load_model(out).history
    return {"processes": processes, "threads": threads,
            "samples_per_s": history["samples_per_s"][-1],
            "epoch_seconds": history["seconds"][-1], "wall_s": wall,
            "final_loss": history["loss"][-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mask = Path(tmp) / "mask.h5"
        subprocess.run([sys.executable, "-m", "susl_cli", "mask", "--dataset", "mnist",
                        "--labelled-classes", "0-4", "--label-fraction", "0.2",
                        "--train-subset", str(args.rows), "--seed", "0", "--quiet", "--out",
                        str(mask)], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        runs = [_train(mask, Path(tmp) / f"run{p}x{t}.h5", args.epochs, p, t)
                for p, t in ((1, 1), (2, 1), (1, 2))]
    one, two, threads = runs
    report = {"rows": args.rows, "epochs": args.epochs, "cpus": os.cpu_count(),
              "load_average_1min": os.getloadavg()[0], "runs": runs,
              "speedup_2proc_vs_1proc_1thread": two["samples_per_s"] / one["samples_per_s"],
              "speedup_2proc_vs_1proc_2threads": two["samples_per_s"]
              / threads["samples_per_s"]}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
