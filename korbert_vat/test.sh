#!/usr/bin/env bash
# Tests the fine-tuned text-only classifier (the reference's korbert_vat/test.sh) on the test split
# and on the speech-recognizer transcripts. MODEL_DIR is a directory written by `audiotext text finetune`.
set -euo pipefail
cd "$(dirname "$0")/.."
AUDIOTEXT=${AUDIOTEXT:-$( [ -x .venv/bin/audiotext ] && echo .venv/bin/audiotext || echo audiotext )}
"$AUDIOTEXT" text test \
    --model "${MODEL_DIR:-korbert_vat/best_model}" \
    --data_path "${DATA_PATH:-data}" \
    --split test test_stt "$@"
