#!/usr/bin/env bash
# Everything a lent CUDA GPU is used for, in one run sized for a short lease (about 9 minutes on an H100):
#   1. the CUDA model tests and the loss-goes-down test on the device's torch;
#   2. bench_model.py, bf16 pretraining steps of both presets at batch 64 and 256, eager;
#   3. the same step at batch 64 captured in a CUDA graph (eager steps are launch-bound: the host needs 60-75 ms);
#   4. regional torch.compile (each transformer block and the wavelet decomposition), ECG at batch 256;
#   5. pretrain.py end to end through ECG/pretrain_ecg.sh (1 GPU, --use_amp, batch 64, 2 epochs of 60 steps) on
#      synthetic data, without and with --compile: the second epoch's samples/s beside the model-only step of
#      parts 2 and 4 is what the engine costs;
#   6. regional compile, EMG at batch 256;
#   7. regional compile in a CUDA graph, ECG at batch 64.
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
"$PY" -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/nvidia_smi.csv"

echo "== 1. CUDA model tests"
timeout 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_model.py -k "cuda or loss_goes_down" > "$OUT/pytest.txt" 2>&1
grep -E "^E  |^FAILED|passed|failed" "$OUT/pytest.txt" | head -20

BENCH=("$PY" benchmarks/bench_model.py --devices cuda --precisions bf16 --modes pretrain --steps 10 --warmup 3)
bench() {  # bench NAME TIMEOUT ARGS...: one bench_model.py run, its log and results file named NAME
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    timeout "$limit" "${BENCH[@]}" "$@" --out "$OUT/$name.json" > "$OUT/$name.txt" 2>&1
    grep -E "samples/s|failed|over --timeout|Error" "$OUT/$name.txt" | head -12
}
bench 2.eager 100 --timeout 45 --batch 64 256
bench 3.cuda_graph 80 --timeout 60 --variant cuda_graph --batch 64
bench 4.regional_ecg 150 --timeout 145 --variant regional --only ecg --batch 256

echo "== 5. pretrain.py, ECG, batch 64, 1 GPU"
SMOKE=/tmp/gpu_engine
mkdir -p "$SMOKE"
"$PY" - "$SMOKE" <<'PYEOF'
import sys
import h5py
import numpy as np
rng = np.random.default_rng(0)
for name, n in (("train", 64 * 60), ("val", 128)):
    with h5py.File(f"{sys.argv[1]}/{name}.h5", "w") as f:
        f["data"] = rng.standard_normal((n, 12, 2048), dtype=np.float32)
PYEOF
for flags in "" "--compile"; do  # the engine as it is, then with the regional compile of the model
    name=pretrain${flags:+_compiled}
    NUM_GPUS=1 PYTHON="$PY" TRAIN_FILES=$SMOKE/train.h5 VAL_FILES=$SMOKE/val.h5 OUTPUT_DIR=$SMOKE/$name EPOCHS=2 \
        timeout 150 bash ECG/pretrain_ecg.sh --batch_size 64 --grad_accumulation_steps 1 --warmup_epochs 0 \
        --mask_ratio 0.6 --importance_ratio 0.6 $flags > "$OUT/5.$name.txt" 2>&1
    echo "$name exit $?"
    "$PY" -c "import json, sys; print('samples/s by epoch:', json.load(open(sys.argv[1]))['train_samples_per_sec'])" \
        "$SMOKE/$name/training_history.json" 2>&1 | tee -a "$OUT/5.$name.txt"
done

bench 6.regional_emg 100 --timeout 95 --variant regional --only emg --batch 256
bench 7.regional_graph 120 --timeout 115 --variant regional_graph --only ecg --batch 64
echo "== tables"
for f in "$OUT"/[0-9]*.txt; do sed -n '/^| preset/,/^$/p' "$f"; done
