#!/usr/bin/env bash
# The GPU check (issue 18), about 5-8 minutes on one GPU:
#   1. the gpu-marked tests (tests/test_gpu.py: CUDA loss = CPU loss, checkpoints moving
#      between CUDA and CPU, data resident on the device, 2-process DDP on 2+ GPUs;
#      tests/cli/test_experiment_gpu.py: a 2-run `susl experiment` grid on the GPUs);
#   2. MNIST SUS timings on CUDA: 1 epoch and 20 epochs of `susl train` (GM-DGM, paper size);
#   3. where 2+ GPUs exist, the same 1-epoch run over 2 processes (torchrun, nccl).
# Usage: SUSL_DATA_DIR=/path/to/datasets bash benchmarks/gpu_check.sh [OUT_FOLDER]
# Prints one line per figure and writes them to OUT_FOLDER/gpu_check.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-check}"
mkdir -p "$out"
log="$out/gpu_check.txt"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "no CUDA device: nothing to check" | tee "$log"; exit 1; }
python -c "import torch; print('gpu:', torch.cuda.get_device_name(0), '| count:',
torch.cuda.device_count(), '| torch', torch.__version__)" | tee "$log"

python -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py \
    tests/cli/test_experiment_gpu.py 2>&1 | tail -3 | tee -a "$log"

python -m susl_cli mask --dataset mnist --labelled-classes 0-4 --label-fraction 0.2 \
    --seed 0 --quiet --overwrite --out "$out/mnist-sus.h5"
for epochs in 1 20; do
    start=$(date +%s.%N)
    python -m susl_cli train "$out/mnist-sus.h5" --preset paper --epochs "$epochs" \
        --device cuda --quiet --overwrite --out "$out/cuda-$epochs.h5"
    end=$(date +%s.%N)
    python - "$out/cuda-$epochs.h5" "$epochs" "$start" "$end" <<'PY' | tee -a "$log"
import sys
from susl_cli.runs import load_model
run = load_model(sys.argv[1])
h = run.history
print(f"cuda, {sys.argv[2]} epoch(s): wall {float(sys.argv[4]) - float(sys.argv[3]):.1f} s, "
      f"training {sum(h['seconds']):.1f} s, last epoch {h['samples_per_s'][-1]:.0f} samples/s, "
      f"final loss {h['loss'][-1]:.3f}")
PY
done

if [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    start=$(date +%s.%N)
    python -m torch.distributed.run --nproc_per_node 2 -m susl_cli train "$out/mnist-sus.h5" \
        --preset paper --epochs 1 --device cuda --quiet --overwrite --out "$out/ddp-1.h5"
    end=$(date +%s.%N)
    python - "$out/ddp-1.h5" "$start" "$end" <<'PY' | tee -a "$log"
import sys
from susl_cli.runs import load_model
run = load_model(sys.argv[1])
print(f"2-process DDP (nccl), 1 epoch: wall {float(sys.argv[3]) - float(sys.argv[2]):.1f} s, "
      f"{run.history['samples_per_s'][-1]:.0f} samples/s, processes {run.meta.world_size}")
PY
else
    echo "one GPU: the 2-process DDP run was skipped" | tee -a "$log"
fi
