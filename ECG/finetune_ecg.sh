#!/usr/bin/env bash
# ECG fine-tuning on PTB-XL (5 superclasses, single-label) from the pretrained ECG model, with the `paper` recipe
# (physiowave/engine/recipes.py): the original launcher's values for --model ecg: 20 epochs, batch 16 per GPU,
# lr 2e-4, weight decay 1e-3, AdamW betas (0.9, 0.999), 5 warmup epochs then cosine to 0, grad clip 1.0, mean pooling,
# head hidden 1024, head dropout 0.1, label smoothing 0.1. RECIPE=physiowave runs the engine's own recipe instead.
# Override with environment variables; extra arguments are passed on to finetune.py (the last value of a flag wins),
# e.g. `bash ECG/finetune_ecg.sh --freeze_encoder` for probing (paper: the MLP head on frozen features, lr 1e-2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RECIPE=${RECIPE:-paper}
NUM_GPUS=${NUM_GPUS:-4}
DATA_DIR=${DATA_DIR:-./data/ptbxl}
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/train.h5}
VAL_FILE=${VAL_FILE:-$DATA_DIR/val.h5}
TEST_FILE=${TEST_FILE:-$DATA_DIR/test.h5}
PRETRAINED=${PRETRAINED:-./pretrain_ecg_output/best_model.pth}
EPOCHS=${EPOCHS:-}  # empty: the recipe's
OUTPUT_DIR=${OUTPUT_DIR:-./finetune_ecg_output}

"${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node="$NUM_GPUS" finetune.py \
    --recipe "$RECIPE" --model ecg \
    --train_file "$TRAIN_FILE" --val_file "$VAL_FILE" --test_file "$TEST_FILE" ${EPOCHS:+--epochs "$EPOCHS"} \
    --pretrained_path "$PRETRAINED" --task_type classification --num_classes 5 \
    --use_amp --seed 42 --output_dir "$OUTPUT_DIR" "$@"
