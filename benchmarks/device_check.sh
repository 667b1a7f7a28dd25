#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU (about 8 minutes):
#   1. a virtual environment with the project and the CUDA build of jax 0.10.2
#      (torch is not installed: the GPU checks do not need it);
#   2. the GPU parity tests (tests/test_gpu.py): cuDNN attention against "xla" at head
#      dims 64 and 88, the model on GPU against CPU in float32, the bf16 train step
#      against float32;
#   3. the train-step benchmark (finetune S/B, distill 1B -> S, batch 8, 8x224x224);
#   4. the planner's compile for the local GPU (per-device bytes, FLOPs, compile time).
# Results go to $OUT (default ./device_check_out): logs and JSON.
#
#   bash benchmarks/device_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/device_check_out}"
mkdir -p "$OUT"
start=$(date +%s)
stage() { echo "== $1 ($(($(date +%s) - start)) s)"; }

stage "GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia_smi.csv"

stage "install"
VENV="${VENV:-$PWD/.venv-gpu}"
[ -d "$VENV" ] || python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# jax 0.10.2 ships CUDA 12 and CUDA 13 wheels; take 13, fall back to 12 for older drivers.
python -m pip install -q -e . "pytest>=8" "jax[cuda13]==0.10.2" \
  || python -m pip install -q -e . "pytest>=8" "jax[cuda12]==0.10.2"
python -c "import jax; print(jax.__version__, jax.devices()); assert jax.default_backend() == 'gpu'" \
  | tee "$OUT/jax_devices.txt"

stage "GPU parity tests"
timeout 240 python -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/test_gpu.log"

stage "train-step benchmark"
timeout 240 python benchmarks/bench_train_step.py \
  --runs finetune_small,finetune_base,distill_1b_small --batch 8 --steps 5 \
  --out "$OUT/bench_train_step.json" 2>&1 | tee "$OUT/bench_train_step.log" || echo "benchmark: exit $?"

stage "plan for the local GPU"
timeout 120 python -m internvqa_jax.plan --config configs/internvqa_dist_small_bvihd.py \
  --topology gpu --nopredict --json "$OUT/plan_gpu.json" 2>&1 | tee "$OUT/plan_gpu.log" \
  || echo "plan: exit $?"

stage "done"
