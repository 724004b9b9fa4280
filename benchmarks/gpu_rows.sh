#!/usr/bin/env bash
# Every GPU number of docs/performance.md in one run of under 8 minutes on one H100/H200, JSON and reports in $OUT.
#
#   .venv/bin/python benchmarks/mnist_idx.py .gpu_data     # here: the 5,000 digits as torchvision files (4 MB)
#   OUT=/tmp/gpu bash benchmarks/gpu_rows.sh                # there: with `import supermask` working
#
# Rows: stacked-search throughput for K = 1, 8, 64, 256 (fp32, then TF32); the 10-task SupSup job;
# 250 and 2,500 PermutedMNIST tasks with task inference (GNu) from 1 image per test batch, then the
# 2,500 again inferred from 8 images. Set TASKS="250 2500" or STEPS to shorten it; DEVICE=cpu checks
# the script itself on a CPU with small numbers.
set -euo pipefail
OUT=${OUT:-benchmarks/results/gpu}
DATA=${DATA:-.gpu_data}
DEVICE=${DEVICE:-cuda}
TASKS=${TASKS:-"250 2500"}
KS=${KS:-"1 8 64 256"}
STEPS=${STEPS:-10}
mkdir -p "$OUT"
SM="python3 -m supermask"
GPU="--set run.use_gpu=$([ "$DEVICE" = cuda ] && echo true || echo false)"
DATASET="--set data.source=torchvision --set data.root=$DATA"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi") > "$OUT/device.txt"
stamp() { echo "$(date +%s) $1" >> "$OUT/timeline.txt"; }

stamp throughput
python3 benchmarks/throughput.py --device "$DEVICE" --ks $KS --steps "$STEPS" --data-root "$DATA" \
  --out "$OUT/throughput-$DEVICE.json"
python3 benchmarks/throughput.py --device "$DEVICE" --ks $KS --steps "$STEPS" --data-root "$DATA" --tf32 \
  --out "$OUT/throughput-$DEVICE-tf32.json"

stamp supsup10
$SM run tasks/permuted_mnist_supsup.yaml $DATASET $GPU --no-progress --out "$OUT/supsup10" | tail -4

for n in $TASKS; do
  stamp "scale$n"
  $SM run tasks/permuted_mnist_scale.yaml $DATASET $GPU --set stream.num_tasks="$n" --no-progress \
    --out "$OUT/scale$n" | tail -6
done
last=$(echo $TASKS | awk '{print $NF}')
stamp "infer$last-8images"
$SM infer --store "$OUT/scale$last" --spec tasks/permuted_mnist_scale.yaml $DATASET $GPU \
  --set stream.num_tasks="$last" --set inference.batch_images=8 --no-progress --out "$OUT/scale$last-8images" | tail -4
stamp done
