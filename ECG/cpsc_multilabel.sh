#!/usr/bin/env bash
# CPSC 2018 multi-label fine-tuning (9 classes) from the pretrained ECG model.
# (The original README references this script but the release never had it; same settings as Chapman-Shaoxing.)
# Override with environment variables; extra arguments are passed on to finetune_multilabel.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
NUM_GPUS=${NUM_GPUS:-4}
DATA_DIR=${DATA_DIR:-./data/cpsc2018}
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/cpsc_9class_train.h5}
VAL_FILE=${VAL_FILE:-$DATA_DIR/cpsc_9class_val.h5}
TEST_FILE=${TEST_FILE:-$DATA_DIR/cpsc_9class_test.h5}
PRETRAINED=${PRETRAINED:-./pretrain_ecg_output/best_model.pth}
EPOCHS=${EPOCHS:-10}
OUTPUT_DIR=${OUTPUT_DIR:-./cpsc_multilabel_output}

"${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node="$NUM_GPUS" finetune_multilabel.py \
    --train_file "$TRAIN_FILE" --val_file "$VAL_FILE" --test_file "$TEST_FILE" \
    --pretrained_path "$PRETRAINED" --task_type multilabel --threshold 0.3 \
    --batch_size 16 --epochs "$EPOCHS" --lr 1e-4 --weight_decay 1e-4 --warmup_epochs 5 \
    --grad_clip 1.0 --use_amp --scheduler cosine \
    --pooling mean --head_hidden_dim 512 --head_dropout 0.2 --label_smoothing 0.1 \
    --seed 42 --output_dir "$OUTPUT_DIR" "$@"
