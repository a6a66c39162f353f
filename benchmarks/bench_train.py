"""Training throughput of susl on MNIST SUS next to the same models written in Pyro (issue #5).

    pip install -e ".[bench]"        # pyro-ppl, only for this benchmark
    python benchmarks/bench_train.py [--threads 2] [--repeats 5] [--steps 20] [--rss]

MNIST, classes 0-4 labelled at 20% (mask seed 0), K = 45; batches of 100 unlabelled + 100
labelled points. For each size (paper: 200 units, d_z = 5; reference code: 500 units,
d_z = 100), model (M2, GM-DGM) and y-estimator (enumerate, gumbel) it measures, in one process:

- susl: unlabelled samples/s of the trainer's own epoch loop (`susl_cli.train._train_epoch`:
  batch sampling, binarisation, loss, backward, Adam) over windows of `--steps` steps;
- Pyro: the same model as a straightforward Pyro SVI program (benchmarks/pyro_ssvae.py,
  TraceEnum_ELBO with parallel enumeration of y) on the same batches; enumeration only. Timed
  twice per round: validation off (Pyro's fastest setting without JIT; the ratio "susl /
  Pyro") and Pyro's default, validation on. Before timing, both programs' losses at the same
  initial weights are averaged over 50 draws, to show they compute the same objective;
- dense-layer FLOPs: matrix-product FLOPs of one step (forward + backward) counted by
  torch.utils.flop_counter, times steps/s, as a % of a matmul peak measured in the same rounds.

Rounds alternate susl, Pyro and the peak measurement so all see the same machine load; each
figure is the median over `--repeats` rounds after one warm-up round. The process-wide CPU
settings `susl train` makes (`susl_cli.cpu_tuning.tune_cpu`) apply to both engines. `--rss` also
trains one full epoch in a subprocess (benchmarks/train_epochs.py) and reports its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from susl_cli.config import ObjectiveConfig, TrainConfig
from susl_cli.cpu_tuning import tune_cpu
from susl_cli.data.masking import make_masked_dataset, parse_class_spec
from susl_cli.data.sources import load_dataset
from susl_cli.evaluate import predict_probs
from susl_cli.models import Batch
from susl_cli.runs import ModelOptions, Run, new_run
from susl_cli.storage.masked import MaskedDataset, write_masked_dataset
from susl_cli.train import (
    SilentObserver,
    TrainingData,
    _train_epoch,
    batch_indices,
    prepare_data,
)

HERE = Path(__file__).resolve().parent
SIZES = {"paper": (200, 5), "reference": (500, 100)}  # name -> (hidden units, d_z)


@dataclass
class Case:
    size: str
    model: str
    estimator: str


def main() -> None:
    args = _parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tuned = tune_cpu()  # what `susl train` does on CPU; the Pyro program gets it too
    pyro_ssvae = _import_pyro(args.no_pyro)
    masked, mask_path, tmp = _mask(args.data_dir)
    header = _header(args)
    header["cpu_settings"] = tuned
    print(header["line"], flush=True)
    rows = []
    for case in _cases(args):
        rows.append(_bench_case(case, masked, mask_path, args, pyro_ssvae))
        print(json.dumps(rows[-1]), flush=True)
    header["load_after"] = os.getloadavg()
    header["peak_rss_mb_this_process"] = _self_rss_mb()
    rss = _training_rss(args) if args.rss else []
    print()
    print(_markdown(header, rows, rss))
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows, "rss": rss},
                                              indent=1))
    tmp.cleanup()


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="paper,reference", help="paper, reference")
    parser.add_argument("--models", default="m2,gmdgm")
    parser.add_argument("--estimators", default="enumerate,gumbel")
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--no-pyro", action="store_true", help="susl only")
    parser.add_argument("--rss", action="store_true", help="peak RSS of one full epoch")
    parser.add_argument("--json", help="also write the results here")
    add_data_dir(parser)
    return parser.parse_args()


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """--data-dir: $SUSL_DATA_DIR, else the shared datasets beside the checkout."""
    parser.add_argument("--data-dir", default=os.environ.get(
        "SUSL_DATA_DIR", str(HERE.parents[1] / "shared" / "datasets")))


def _import_pyro(disabled: bool):
    if disabled:
        return None
    try:
        sys.path.insert(0, str(HERE))
        import pyro_ssvae
    except ImportError:
        print("pyro-ppl is not installed (pip install -e '.[bench]'): measuring susl only")
        return None
    return pyro_ssvae


def _cases(args: argparse.Namespace) -> list[Case]:
    return [Case(s, m, e) for s in args.sizes.split(",") for m in args.models.split(",")
            for e in args.estimators.split(",")]


def _mask(data_dir: str) -> tuple[MaskedDataset, Path, tempfile.TemporaryDirectory]:
    mnist = load_dataset("mnist", data_dir=data_dir)
    masked = make_masked_dataset(mnist, parse_class_spec("0-4", 10), label_fraction=0.2,
                                 seed=0)
    tmp = tempfile.TemporaryDirectory()
    path = Path(tmp.name) / "mask.h5"
    write_masked_dataset(path, masked)
    return masked, path, tmp


def _header(args: argparse.Namespace) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    header = {"date": datetime.now(UTC).isoformat(timespec="minutes"), "cpu": cpu,
              "cores": os.cpu_count(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "load_before": os.getloadavg(),
              "command": " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}",
                                   *sys.argv[1:]])}
    header["line"] = (f"{header['date']}  {cpu}, {header['cores']} cores, torch "
                      f"{torch.__version__}, {header['threads']} threads, load "
                      f"{header['load_before'][0]:.2f}")
    return header


def timing_window(masked: MaskedDataset, mask_path: Path, model: str, estimator: str,
                  steps: int, hidden: int = 200, latent: int = 5,
                  device: torch.device = torch.device("cpu")) -> tuple[Run, TrainingData]:
    """A fresh seeded run and the training data cut to `steps` unlabelled batches: what the
    speed benchmarks time `_train_epoch` on."""
    config = TrainConfig(epochs=10**6)
    run = new_run(masked, mask_path, ModelOptions(model=model, settings={
        "hidden_units": hidden, "latent_dim": latent}), config, device,
        ObjectiveConfig(y_estimator=estimator))
    data = prepare_data(run, masked.x_train, masked.y_observed, device)
    return run, replace(data, x_unlabelled=data.x_unlabelled[:steps * config.batch_size])


# -- one case --------------------------------------------------------------------------------


def _bench_case(case: Case, masked: MaskedDataset, mask_path: Path, args: argparse.Namespace,
                pyro_ssvae) -> dict:
    hidden, latent = SIZES[case.size]
    run, window = timing_window(masked, mask_path, case.model, case.estimator, args.steps,
                                hidden, latent)
    config = run.train_config
    svi = None
    if pyro_ssvae is not None and case.estimator == "enumerate":
        program = pyro_ssvae.PyroSSVAE(run.model, run.model.objective.alpha)
        loss_check = _loss_check(run, program, window, config, pyro_ssvae)
        svi = pyro_ssvae.make_svi(program, config.learning_rate)
    k = run.model_config.n_components
    peak_shapes = [(2048, 2048, 2048), (config.batch_size * k, hidden, run.model_config.input_dim)]
    times: dict[str, list[float]] = {name: [] for name in
                                     ("susl", "pyro", "pyro_validated", "peak", "susl_cpu",
                                      "pyro_cpu")}
    n_samples = len(window.x_unlabelled)
    for _ in range(args.repeats + 1):  # the first round warms up
        cpu = time.process_time()
        times["susl"].append(_train_epoch(run, window, SilentObserver())["samples_per_s"])
        times["susl_cpu"].append(n_samples / (time.process_time() - cpu))
        if svi is not None:
            cpu = time.process_time()
            times["pyro"].append(_pyro_epoch(
                pyro_ssvae, svi, window, config, k, validate=False))
            times["pyro_cpu"].append(n_samples / (time.process_time() - cpu))
            times["pyro_validated"].append(_pyro_epoch(
                pyro_ssvae, svi, window, config, k, validate=True))
        times["peak"].append(_matmul_peak(peak_shapes))
    median = {name: statistics.median(v[1:]) for name, v in times.items() if v}
    row = {"size": case.size, "hidden": hidden, "latent_dim": latent, "K": k,
           "model": case.model, "estimator": case.estimator,
           "susl_samples_per_s": median["susl"], "peak_gflops": median["peak"],
           "eval_10k_s": _eval_seconds(run, masked)}
    row.update(_utilisation("susl", _flops_per_step(run, window), row, config))
    if svi is not None:
        row["loss_check"] = loss_check
        row["pyro_samples_per_s"] = median["pyro"]
        row["pyro_validated_samples_per_s"] = median["pyro_validated"]
        row["ratio"] = median["susl"] / median["pyro"]
        row["ratio_validated"] = median["susl"] / median["pyro_validated"]
        row["ratio_cpu_time"] = median["susl_cpu"] / median["pyro_cpu"]  # robust to load
        row.update(_utilisation("pyro", _pyro_flops_per_step(svi, window, config, k), row,
                                config))
    return row


def _utilisation(engine: str, flops: float, row: dict, config: TrainConfig) -> dict:
    """GFLOP per step, dense GFLOP/s and % of the matmul peak at the measured throughput."""
    gflops = flops * row[f"{engine}_samples_per_s"] / config.batch_size / 1e9
    return {f"{engine}_gflop_per_step": flops / 1e9, f"{engine}_dense_gflops": gflops,
            f"{engine}_pct_of_peak": 100 * gflops / row["peak_gflops"]}


def _pyro_batches(window: TrainingData, config: TrainConfig, n_components: int,
                  generator: torch.Generator):
    """The trainer's batches (same sampler, same binarisation) as the Pyro program's arguments:
    (x_l, one-hot y_l over all K components, x_u)."""
    batches_u, batches_l = batch_indices(window, config.batch_size,
                                          config.labelled_batch_size, generator,
                                          torch.device("cpu"))
    for idx_u, idx_l in zip(batches_u, batches_l, strict=True):
        x_u = torch.bernoulli(window.x_unlabelled[idx_u], generator=generator)
        x_l = torch.bernoulli(window.x_labelled[idx_l], generator=generator)
        yield x_l, F.one_hot(window.y_labelled[idx_l], n_components).to(x_l.dtype), x_u


@torch.no_grad()
def _loss_check(run: Run, program, window: TrainingData, config: TrainConfig, pyro_ssvae,
                draws: int = 50) -> dict[str, float]:
    """Mean and standard error of both programs' loss (one-sample KL) on one batch."""
    x_l, y_l, x_u = next(_pyro_batches(window, config, run.model_config.n_components,
                                       torch.Generator().manual_seed(2)))
    objective = run.model.objective
    run.model.objective = replace(objective, kl="sampled")
    labels = y_l.argmax(-1)
    ours = torch.tensor([float(run.model(Batch(x_l, labels, x_u)).loss) for _ in range(draws)])
    run.model.objective = objective
    theirs = torch.tensor(pyro_ssvae.loss_draws(program, (x_l, y_l, x_u), draws))
    return {"susl": float(ours.mean()), "susl_se": float(ours.std() / draws**0.5),
            "pyro": float(theirs.mean()), "pyro_se": float(theirs.std() / draws**0.5)}


def _pyro_epoch(pyro_ssvae, svi, window: TrainingData, config: TrainConfig, n_components: int,
                validate: bool) -> float:
    """Unlabelled samples/s of SVI steps over the window; `validate`: Pyro's default checks."""
    pyro_ssvae.set_validation(validate)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for batch in _pyro_batches(window, config, n_components, generator):
        svi.step(*batch)
    return len(window.x_unlabelled) / (time.perf_counter() - start)


def _flops_per_step(run: Run, window: TrainingData) -> float:
    """Matrix-product FLOPs of one training step (forward and backward)."""
    config = run.train_config
    n_l, n_u = config.labelled_batch_size, config.batch_size
    with FlopCounterMode(display=False) as counter:
        run.model(Batch(window.x_labelled[:n_l], window.y_labelled[:n_l],
                        window.x_unlabelled[:n_u])).loss.backward()
    run.model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _pyro_flops_per_step(svi, window: TrainingData, config: TrainConfig,
                         n_components: int) -> float:
    batch = next(_pyro_batches(window, config, n_components, torch.Generator().manual_seed(1)))
    with FlopCounterMode(display=False) as counter:
        svi.step(*batch)
    return float(counter.get_total_flops())


def _matmul_peak(shapes: list[tuple[int, int, int]], repeats: int = 3) -> float:
    """Best GFLOP/s of float32 matrix products of the given (m, k, n) shapes."""
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        calls = max(1, int(2e9 / (2 * m * k * n)))
        torch.mm(a, b)
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b)
            best = max(best, 2 * m * k * n * calls / (time.perf_counter() - start) / 1e9)
    return best


def _eval_seconds(run: Run, masked: MaskedDataset) -> float:
    """Seconds to compute q(y|x) for the whole test set (the evaluation path)."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        predict_probs(run, masked.x_test)
        times.append(time.perf_counter() - start)
    run.model.train()
    return min(times)


# -- memory and report -----------------------------------------------------------------------


def _self_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _training_rss(args: argparse.Namespace) -> list[dict]:
    """Peak RSS of one full training epoch per (model, estimator), each in its own process."""
    out = []
    for model in args.models.split(","):
        for estimator in args.estimators.split(","):
            cmd = [sys.executable, str(HERE / "train_epochs.py"), "--epochs", "1",
                   "--model", model, "--y-estimator", estimator, "--device", "cpu"]
            env = {**os.environ, "SUSL_DATA_DIR": args.data_dir}
            if args.threads:
                env["OMP_NUM_THREADS"] = str(args.threads)
            result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            rss = next(float(line.split()[-2]) for line in result.stdout.splitlines()
                       if line.startswith("peak RSS"))
            out.append({"model": model, "estimator": estimator, "peak_rss_mb": rss,
                        "epoch": result.stdout.strip().splitlines()[-2]})
            print(out[-1], flush=True)
    return out


def _markdown(header: dict, rows: list[dict], rss: list[dict]) -> str:
    lines = [f"{header['date']}, {header['cpu']}, {header['cores']} cores, "
             f"{header['threads']} torch threads, torch {header['torch']}; load average "
             f"{header['load_before'][0]:.2f} before, {header['load_after'][0]:.2f} after; "
             f"CPU settings {header['cpu_settings']} (both engines).",
             f"Command: `{header['command'].strip()}`", "",
             "| model | units / d_z | y | susl samples/s | Pyro samples/s | susl / Pyro "
             "| ... in CPU time | ... Pyro with validation | GFLOP/step susl, Pyro "
             "| susl dense GFLOP/s | % of matmul peak susl, Pyro | q(y|x), 10k test points |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "ratio" in r:
            pyro = (f"{r['pyro_samples_per_s']:.0f} | {r['ratio']:.2f}x | "
                    f"{r['ratio_cpu_time']:.2f}x | {r['ratio_validated']:.2f}x")
            flops = f"{r['susl_gflop_per_step']:.2f}, {r['pyro_gflop_per_step']:.2f}"
            pct = f"{r['susl_pct_of_peak']:.0f}%, {r['pyro_pct_of_peak']:.0f}%"
        else:
            pyro, flops = "- | - | - | -", f"{r['susl_gflop_per_step']:.2f}, -"
            pct = f"{r['susl_pct_of_peak']:.0f}%, -"
        lines.append(
            f"| {r['model']} | {r['hidden']} / {r['latent_dim']} | {r['estimator']} | "
            f"{r['susl_samples_per_s']:.0f} | {pyro} | {flops} | {r['susl_dense_gflops']:.0f} | "
            f"{pct} (peak {r['peak_gflops']:.0f}) | {r['eval_10k_s']:.2f} s |")
    checks = [r for r in rows if "loss_check" in r]
    if checks:
        lines += ["", "Same objective: loss at the initial weights, mean ± s.e. of 50 draws "
                  "(susl vs Pyro): " + "; ".join(
                      "{model} {hidden}/{latent_dim}: ".format(**r)
                      + "{susl:.3f} ± {susl_se:.3f} vs {pyro:.3f} ± {pyro_se:.3f}".format(
                          **r["loss_check"]) for r in checks) + "."]
    if rss:
        lines += ["", "Peak RSS of one full MNIST training epoch (own process): " + ", ".join(
            f"{r['model']} {r['estimator']} {r['peak_rss_mb']:.0f} MB" for r in rss) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
