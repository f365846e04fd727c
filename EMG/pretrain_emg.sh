#!/usr/bin/env bash
# EMG pretraining with the `paper` recipe (physiowave/engine/recipes.py): the original release's published
# configuration, emg.pth's model (4,854,486 parameters: raw input, original objective, MLP decoder, the original's
# frequency-guided masking), 8 channels, NinaPro DB6 windows, 32 per GPU × 4 GPUs × 2 accumulation = 256 per step,
# 30 epochs, lr 1e-4, weight decay 0.01, AdamW betas (0.9, 0.95), 10 warmup epochs then cosine to 0, mask ratio 0.6.
# RECIPE=physiowave runs the engine's own recipe on the same --model emg shape instead.
# DB6 windows are 1024 samples; the original padded them to --max_length 2048 (half zeros). Set MAX_LENGTH=1024 to avoid it.
# Override with environment variables; extra arguments are passed on to pretrain.py (the last value of a flag wins).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RECIPE=${RECIPE:-paper}
NUM_GPUS=${NUM_GPUS:-4}
DATA_DIR=${DATA_DIR:-./DB6_processed_8ch}
TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/train.h5}
VAL_FILES=${VAL_FILES:-$DATA_DIR/val.h5}
EPOCHS=${EPOCHS:-}  # empty: the recipe's
MAX_LENGTH=${MAX_LENGTH:-2048}
OUTPUT_DIR=${OUTPUT_DIR:-./pretrain_emg_output}

"${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node="$NUM_GPUS" pretrain.py \
    --recipe "$RECIPE" --model emg \
    --train_files "$TRAIN_FILES" --val_files "$VAL_FILES" --max_length "$MAX_LENGTH" ${EPOCHS:+--epochs "$EPOCHS"} \
    --use_amp --save_freq 10 --seed 42 --output_dir "$OUTPUT_DIR" "$@"
