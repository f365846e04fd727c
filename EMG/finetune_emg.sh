#!/usr/bin/env bash
# EMG fine-tuning on EPN-612 (6 gestures, 8 × 1024 at 200 Hz) from the pretrained EMG model.
# Override with environment variables; extra arguments are passed on to finetune.py (the last value of a flag wins),
# e.g. `bash EMG/finetune_emg.sh --freeze_encoder` for linear probing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
NUM_GPUS=${NUM_GPUS:-4}
DATA_DIR=${DATA_DIR:-./EPN612_processed}
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/epn612_train_set.h5}
VAL_FILE=${VAL_FILE:-$DATA_DIR/epn612_val_set.h5}
TEST_FILE=${TEST_FILE:-$DATA_DIR/epn612_test_set.h5}
PRETRAINED=${PRETRAINED:-./pretrain_emg_output/best_model.pth}
EPOCHS=${EPOCHS:-5}
OUTPUT_DIR=${OUTPUT_DIR:-./finetune_emg_output}

"${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node="$NUM_GPUS" finetune.py \
    --train_file "$TRAIN_FILE" --val_file "$VAL_FILE" --test_file "$TEST_FILE" \
    --pretrained_path "$PRETRAINED" --task_type classification --num_classes 6 \
    --batch_size 32 --epochs "$EPOCHS" --lr 2e-4 --min_lr 1e-6 --weight_decay 1e-3 --warmup_epochs 2 \
    --grad_clip 1.0 --use_amp --scheduler cosine \
    --pooling mean --head_hidden_dim 512 --head_dropout 0.1 --label_smoothing 0.1 \
    --seed 42 --output_dir "$OUTPUT_DIR" "$@"
