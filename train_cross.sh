#!/usr/bin/env bash
# Cross-modal Transformer between audio (MFCC) and text (frozen BERT-family encoder), as the
# reference's train_cross.sh, with a learning rate that learns (see train_audio.sh).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DATA_PATH=${DATA_PATH:-data}
"$PYTHON" train.py \
    --data_path="$DATA_PATH" \
    --name="${NAME:-cross}" \
    ${BERT_MODEL_PATH:+--bert_model_path="$BERT_MODEL_PATH"} \
    --lr="${LR:-0.001}" \
    --d_model="${DIM_MODEL:-30}" \
    --attn_dropout="${ATTENTION_DROPOUT:-0.1}" \
    --embed_dropout="${EMBED_DROPOUT:-0.25}" \
    --attn_dropout_a="${ATTENTION_DROPOUT_AUDIO:-0.1}" \
    --out_dropout="${OUT_DROPOUT:-0.1}" \
    --resample_rate="${RESAMPLE_RATE:-8000}" \
    --n_fft_size="${N_FFT_SIZE:-400}" \
    --merge_how="${MERGE_HOW:-average}" \
    --num_epochs="${EPOCHS:-10}" \
    --batch_size="${BATCH_SIZE:-24}" \
    "$@"
