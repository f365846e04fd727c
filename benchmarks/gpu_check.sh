#!/usr/bin/env bash
# Everything a CUDA GPU is used for in one run, sized for a short lease (about 8 minutes on an H200):
#   1. the model tests, CUDA ones included (tests/test_model.py);
#   2. bench_model.py in bf16, eager: the pretraining step and inference at batch 8 (the CPU protocol) and 64;
#   3. the same steps captured in CUDA graphs (eager steps are launch-bound: the host needs 60-75 ms per step);
#   4. an end-to-end run of the EMG launchers (pretrain → fine-tune, torchrun, --use_amp) on synthetic data;
#   5. bench_model.py with torch.compile for the ECG pretraining step at batch 64.
# Logs and results files go to $OUT (default benchmarks/results/gpu). Each part has its own time limit, so a
# failing or slow part leaves the others' results.
#     bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-benchmarks/results/gpu}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if ! "$PY" -c "import pywt" 2>/dev/null; then  # an image without PyWavelets: install wheels carried in .whl/
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv \
    | tee "$OUT/nvidia_smi.csv"

echo "== 1. model tests"
timeout 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_model.py > "$OUT/pytest.txt" 2>&1
grep -E "^E  |^FAILED|passed|failed" "$OUT/pytest.txt" | head -20

echo "== 2. bench_model, bf16, eager"
BENCH=("$PY" benchmarks/bench_model.py --devices cuda --precisions bf16 --steps 10 --warmup 3 --timeout 60)
timeout 150 "${BENCH[@]}" --modes pretrain infer --batch 8 64 --out "$OUT/cuda_bf16.json" > "$OUT/bench_eager.txt" 2>&1
grep -E "samples/s|failed|over --timeout" "$OUT/bench_eager.txt"

echo "== 3. bench_model, bf16, CUDA graphs"
timeout 150 "${BENCH[@]}" --variant cuda_graph --modes pretrain infer --batch 8 64 --out "$OUT/cuda_bf16_graph.json" \
    > "$OUT/bench_graph.txt" 2>&1
grep -E "samples/s|failed|over --timeout|Error" "$OUT/bench_graph.txt" | head -20

echo "== 4. launchers on synthetic data (1 GPU)"
SMOKE=/tmp/gpu_smoke
mkdir -p "$SMOKE"
"$PY" - "$SMOKE" <<'EOF'
import sys
import h5py
import numpy as np
rng = np.random.default_rng(0)
for name, n in (("train", 512), ("val", 128), ("test", 128)):
    with h5py.File(f"{sys.argv[1]}/{name}.h5", "w") as f:
        f["data"] = rng.standard_normal((n, 8, 1024), dtype=np.float32)
        f["label"] = rng.integers(0, 6, n)
EOF
export NUM_GPUS=1 PYTHON="$PY"
TRAIN_FILES=$SMOKE/train.h5 VAL_FILES=$SMOKE/val.h5 OUTPUT_DIR=$SMOKE/pretrain timeout 60 bash EMG/pretrain_emg.sh \
    --epochs 2 --warmup_epochs 1 --save_freq 1 --max_length 1024 --grad_accumulation_steps 1 > "$OUT/launchers.txt" 2>&1
echo "pretrain exit $?" | tee -a "$OUT/launchers.txt"
TRAIN_FILE=$SMOKE/train.h5 VAL_FILE=$SMOKE/val.h5 TEST_FILE=$SMOKE/test.h5 PRETRAINED=$SMOKE/pretrain/best_model.pth \
    OUTPUT_DIR=$SMOKE/finetune timeout 60 bash EMG/finetune_emg.sh --epochs 2 --warmup_epochs 1 >> "$OUT/launchers.txt" 2>&1
echo "finetune exit $?" | tee -a "$OUT/launchers.txt"
tr '\r' '\n' < "$OUT/launchers.txt" | grep -aE "^(pretrain|classification): |^done in|^loaded |Error|error:" | head -12
cp "$SMOKE/finetune/test_results.json" "$OUT/smoke_test_results.json" 2>/dev/null

echo "== 5. bench_model, bf16, torch.compile"
timeout 200 "${BENCH[@]}" --timeout 190 --variant compile --only ecg --modes pretrain --batch 64 \
    --out "$OUT/cuda_bf16_compiled.json" > "$OUT/bench_compiled.txt" 2>&1
grep -E "samples/s|failed|over --timeout" "$OUT/bench_compiled.txt"
echo "== tables"
sed -n '/^| preset/,/^$/p' "$OUT/bench_eager.txt" "$OUT/bench_graph.txt" "$OUT/bench_compiled.txt"
