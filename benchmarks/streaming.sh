#!/bin/bash
# Streamed vs in-memory training (README "Scaling out"): one epoch of MNIST SUS (60,000
# rows), GM-DGM 64 units / d_z 8, batch 100 + 100, on the CPU; samples/s, peak RSS, loss.
#   susl mask --dataset mnist --labelled-classes 0-4 --out mnist-sus.h5
#   benchmarks/streaming.sh mnist-sus.h5 OUT_FOLDER
set -euo pipefail
mask=$1 out=$2
mkdir -p "$out"
for m in --no-stream --stream; do
  /usr/bin/time -f "$m peak_rss_kb=%M wall_s=%e" python -m susl_cli train "$mask" \
    --model gmdgm --epochs 1 --hidden-units 64 --latent-dim 8 --batch-size 100 \
    --labelled-batch-size 100 --device cpu --json --overwrite $m --out "$out/run$m.h5" \
    > "$out/summary$m.json"
  python -c "import json, sys; d = json.load(open(sys.argv[1])); f = d['final']; \
print(sys.argv[2], d['data'], '| samples/s', round(f['samples_per_s']), '| loss', \
round(f['loss'], 2), '| labelled acc', round(f['train_labelled_acc'], 3))" \
    "$out/summary$m.json" "$m"
done
