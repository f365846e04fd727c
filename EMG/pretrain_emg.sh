#!/usr/bin/env bash
# EMG pretraining, the original release's configuration (4.9 M parameters; emg.pth):
# 8 channels, NinaPro DB6 windows, 32 per GPU × 4 GPUs × 2 accumulation = 256 per step.
# DB6 windows are 1024 samples; the original padded them to --max_length 2048 (half zeros). Set MAX_LENGTH=1024 to avoid it.
# Override with environment variables; extra arguments are passed on to pretrain.py (the last value of a flag wins).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
NUM_GPUS=${NUM_GPUS:-4}
DATA_DIR=${DATA_DIR:-./DB6_processed_8ch}
TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/train.h5}
VAL_FILES=${VAL_FILES:-$DATA_DIR/val.h5}
EPOCHS=${EPOCHS:-30}
MAX_LENGTH=${MAX_LENGTH:-2048}
OUTPUT_DIR=${OUTPUT_DIR:-./pretrain_emg_output}

"${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node="$NUM_GPUS" pretrain.py \
    --train_files "$TRAIN_FILES" --val_files "$VAL_FILES" \
    --model emg \
    --max_length "$MAX_LENGTH" --batch_size 32 --grad_accumulation_steps 2 --epochs "$EPOCHS" \
    --lr 1e-4 --weight_decay 0.01 --warmup_epochs 10 --grad_clip 1.0 --use_amp \
    --mask_ratio 0.6 --masking_strategy frequency_guided --importance_ratio 0.6 \
    --save_freq 10 --seed 42 --output_dir "$OUTPUT_DIR" "$@"
