"""Train GM-DGM (or M2) on full MNIST SUS for a few epochs and print epoch time and samples/s.

    python benchmarks/train_epochs.py --epochs 2 [--model gmdgm] [--y-estimator enumerate]

Reads MNIST from $SUSL_DATA_DIR (or ../shared/datasets). Prints one line per epoch, a
summary and the process's peak RSS; the numbers are measured on the machine it runs on.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

import torch

from susl_cli.data.masking import make_masked_dataset, parse_class_spec
from susl_cli.data.sources import load_dataset
from susl_cli.runs import ModelOptions
from susl_cli.storage.masked import write_masked_dataset
from susl_cli.train import train_mask_file


class PrintEpochs:
    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        self.steps = steps

    def steps_done(self, n: int) -> None:
        pass

    def running_loss(self, loss: float) -> None:
        pass

    def epoch_finished(self, record: dict[str, float]) -> None:
        print(f"epoch {int(record['epoch'])}: {record['seconds']:.1f} s, "
              f"{record['samples_per_s']:.0f} unlabelled samples/s, {self.steps} steps, "
              f"loss {record['loss']:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="gmdgm")
    parser.add_argument("--y-estimator", default="enumerate")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    data_dir = os.environ.get("SUSL_DATA_DIR",
                              str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    mnist = load_dataset("mnist", data_dir=data_dir)
    masked = make_masked_dataset(mnist, parse_class_spec("0-4", 10), label_fraction=0.2,
                                 labels_per_class=None, seed=0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        mask = Path(tmp) / "mask.h5"
        write_masked_dataset(mask, masked)
        run = train_mask_file(mask, Path(tmp) / "run.h5", options=ModelOptions(model=args.model),
                              train_overrides={"epochs": args.epochs,
                                               "y_estimator": args.y_estimator},
                              device=args.device, observer=PrintEpochs())
    rates = run.history["samples_per_s"]
    print(f"{args.model} ({args.y_estimator}), K={run.model_config.n_components}: "
          f"median {sorted(rates)[len(rates) // 2]:.0f} unlabelled samples/s over {len(rates)} "
          "epochs")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
