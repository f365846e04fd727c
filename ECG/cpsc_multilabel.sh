#!/usr/bin/env bash
# CPSC 2018 multi-label fine-tuning (9 classes) from the pretrained ECG model, with the `paper` recipe
# (physiowave/engine/recipes.py): the original Shaoxing launcher's values for --model ecg: 10 epochs, batch 16 per
# GPU, lr 1e-4, weight decay 1e-4, AdamW betas (0.9, 0.999), 5 warmup epochs then cosine to 0, grad clip 1.0,
# threshold 0.3, mean pooling, head hidden 512, head dropout 0.2, no label smoothing (the original's BCE had none).
# RECIPE=physiowave runs the engine's own recipe instead.
# (The original README references this script but the release never had it; same settings as Chapman-Shaoxing.)
# Override with environment variables; extra arguments are passed on to finetune_multilabel.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RECIPE=${RECIPE:-paper}
NUM_GPUS=${NUM_GPUS:-4}
DATA_DIR=${DATA_DIR:-./data/cpsc2018}
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/cpsc_9class_train.h5}
VAL_FILE=${VAL_FILE:-$DATA_DIR/cpsc_9class_val.h5}
TEST_FILE=${TEST_FILE:-$DATA_DIR/cpsc_9class_test.h5}
PRETRAINED=${PRETRAINED:-./pretrain_ecg_output/best_model.pth}
EPOCHS=${EPOCHS:-}  # empty: the recipe's
OUTPUT_DIR=${OUTPUT_DIR:-./cpsc_multilabel_output}

"${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node="$NUM_GPUS" finetune_multilabel.py \
    --recipe "$RECIPE" --model ecg \
    --train_file "$TRAIN_FILE" --val_file "$VAL_FILE" --test_file "$TEST_FILE" ${EPOCHS:+--epochs "$EPOCHS"} \
    --pretrained_path "$PRETRAINED" --task_type multilabel \
    --use_amp --seed 42 --output_dir "$OUTPUT_DIR" "$@"
