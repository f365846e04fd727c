#!/usr/bin/env bash
# EMG fine-tuning on EPN-612 (6 gestures, 8 × 1024 at 200 Hz) from the pretrained EMG model, with the `paper` recipe
# (physiowave/engine/recipes.py): the original launcher's values for --model emg: 5 epochs, batch 32 per GPU,
# lr 2e-4, weight decay 1e-3, AdamW betas (0.9, 0.999), 2 warmup epochs then cosine to 0, grad clip 1.0, mean pooling,
# head hidden 512, head dropout 0.1, label smoothing 0.1. RECIPE=physiowave runs the engine's own recipe instead.
# Override with environment variables; extra arguments are passed on to finetune.py (the last value of a flag wins),
# e.g. `bash EMG/finetune_emg.sh --freeze_encoder` for probing (paper: the MLP head on frozen features, lr 1e-2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RECIPE=${RECIPE:-paper}
NUM_GPUS=${NUM_GPUS:-4}
DATA_DIR=${DATA_DIR:-./EPN612_processed}
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/epn612_train_set.h5}
VAL_FILE=${VAL_FILE:-$DATA_DIR/epn612_val_set.h5}
TEST_FILE=${TEST_FILE:-$DATA_DIR/epn612_test_set.h5}
PRETRAINED=${PRETRAINED:-./pretrain_emg_output/best_model.pth}
EPOCHS=${EPOCHS:-}  # empty: the recipe's
OUTPUT_DIR=${OUTPUT_DIR:-./finetune_emg_output}

"${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node="$NUM_GPUS" finetune.py \
    --recipe "$RECIPE" --model emg \
    --train_file "$TRAIN_FILE" --val_file "$VAL_FILE" --test_file "$TEST_FILE" ${EPOCHS:+--epochs "$EPOCHS"} \
    --pretrained_path "$PRETRAINED" --task_type classification --num_classes 6 \
    --use_amp --seed 42 --output_dir "$OUTPUT_DIR" "$@"
