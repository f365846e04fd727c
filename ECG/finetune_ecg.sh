#!/usr/bin/env bash
# ECG fine-tuning on PTB-XL (5 superclasses, single-label) from the pretrained ECG model.
# Override with environment variables; extra arguments are passed on to finetune.py (the last value of a flag wins),
# e.g. `bash ECG/finetune_ecg.sh --freeze_encoder` for linear probing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
NUM_GPUS=${NUM_GPUS:-4}
DATA_DIR=${DATA_DIR:-./data/ptbxl}
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/train.h5}
VAL_FILE=${VAL_FILE:-$DATA_DIR/val.h5}
TEST_FILE=${TEST_FILE:-$DATA_DIR/test.h5}
PRETRAINED=${PRETRAINED:-./pretrain_ecg_output/best_model.pth}
EPOCHS=${EPOCHS:-20}
OUTPUT_DIR=${OUTPUT_DIR:-./finetune_ecg_output}

"${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node="$NUM_GPUS" finetune.py \
    --train_file "$TRAIN_FILE" --val_file "$VAL_FILE" --test_file "$TEST_FILE" \
    --pretrained_path "$PRETRAINED" --task_type classification --num_classes 5 \
    --batch_size 16 --epochs "$EPOCHS" --lr 2e-4 --min_lr 1e-6 --weight_decay 1e-3 --warmup_epochs 5 \
    --grad_clip 1.0 --use_amp --scheduler cosine \
    --pooling mean --head_hidden_dim 1024 --head_dropout 0.1 --label_smoothing 0.1 \
    --seed 42 --output_dir "$OUTPUT_DIR" "$@"
