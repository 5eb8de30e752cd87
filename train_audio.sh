#!/usr/bin/env bash
# Audio-only Transformer over MFCCs, as the reference's train_audio.sh (with a rate that learns:
# the reference's script used 1e-5, which leaves this model at chance; its README says 1e-3).
# DIM_MODEL and ATTENTION_DROPOUT_AUDIO are passed only when set: this model reads neither (its width
# is its audio features'), so `train` refuses them.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DATA_PATH=${DATA_PATH:-data}
"$PYTHON" train.py --do_audio \
    --data_path="$DATA_PATH" \
    --name="${NAME:-audio}" \
    --lr="${LR:-0.001}" \
    --attn_dropout="${ATTENTION_DROPOUT:-0.1}" \
    --embed_dropout="${EMBED_DROPOUT:-0.1}" \
    --out_dropout="${OUT_DROPOUT:-0.1}" \
    --resample_rate="${RESAMPLE_RATE:-8000}" \
    --n_fft_size="${N_FFT_SIZE:-400}" \
    --merge_how="${MERGE_HOW:-average}" \
    --num_epochs="${EPOCHS:-10}" \
    --batch_size="${BATCH_SIZE:-24}" \
    ${DIM_MODEL:+--d_model="$DIM_MODEL"} \
    ${ATTENTION_DROPOUT_AUDIO:+--attn_dropout_a="$ATTENTION_DROPOUT_AUDIO"} \
    "$@"
