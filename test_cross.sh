#!/usr/bin/env bash
# Tests the cross-modal run on the test split and on the speech-recognizer transcripts.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PYTHON" test.py --data_path="${DATA_PATH:-data}" --name="${NAME:-cross}" --split test test_stt "$@"
