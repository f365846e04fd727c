#!/usr/bin/env bash
# ECG pretraining with the `paper` recipe (physiowave/engine/recipes.py): the original release's published
# configuration, ecg.pth's model (14,425,641 parameters: raw input, original objective, MLP decoder, the original's
# frequency-guided masking), 12 leads × 2048 samples at 500 Hz, 16 per GPU × 4 GPUs × 2 accumulation = 128 per step,
# 20 epochs, lr 2e-5, weight decay 1e-3, AdamW betas (0.9, 0.95), 5 warmup epochs then cosine to 0, mask ratio 0.7.
# RECIPE=physiowave runs the engine's own recipe on the same --model ecg shape instead.
# Override with environment variables; extra arguments are passed on to pretrain.py (the last value of a flag wins).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RECIPE=${RECIPE:-paper}
NUM_GPUS=${NUM_GPUS:-4}
DATA_DIR=${DATA_DIR:-./data/mimic_ecg}
TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/mimic_pretrain_train.h5}
VAL_FILES=${VAL_FILES:-$DATA_DIR/mimic_pretrain_val.h5}
EPOCHS=${EPOCHS:-}  # empty: the recipe's
OUTPUT_DIR=${OUTPUT_DIR:-./pretrain_ecg_output}

"${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node="$NUM_GPUS" pretrain.py \
    --recipe "$RECIPE" --model ecg \
    --train_files "$TRAIN_FILES" --val_files "$VAL_FILES" ${EPOCHS:+--epochs "$EPOCHS"} \
    --use_amp --save_freq 10 --seed 42 --output_dir "$OUTPUT_DIR" "$@"
