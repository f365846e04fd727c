#!/usr/bin/env bash
# ECG pretraining, the original release's configuration (14.4 M parameters; ecg.pth):
# 12 leads × 2048 samples at 500 Hz, 16 per GPU × 4 GPUs × 2 accumulation = 128 per step.
# Override with environment variables; extra arguments are passed on to pretrain.py (the last value of a flag wins).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
NUM_GPUS=${NUM_GPUS:-4}
DATA_DIR=${DATA_DIR:-./data/mimic_ecg}
TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/mimic_pretrain_train.h5}
VAL_FILES=${VAL_FILES:-$DATA_DIR/mimic_pretrain_val.h5}
EPOCHS=${EPOCHS:-20}
OUTPUT_DIR=${OUTPUT_DIR:-./pretrain_ecg_output}

"${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node="$NUM_GPUS" pretrain.py \
    --train_files "$TRAIN_FILES" --val_files "$VAL_FILES" \
    --model ecg \
    --max_length 2048 --batch_size 16 --grad_accumulation_steps 2 --epochs "$EPOCHS" \
    --lr 2e-5 --weight_decay 1e-3 --warmup_epochs 5 --grad_clip 1.0 --use_amp \
    --mask_ratio 0.7 --masking_strategy frequency_guided --importance_ratio 0.7 \
    --save_freq 10 --seed 42 --output_dir "$OUTPUT_DIR" "$@"
