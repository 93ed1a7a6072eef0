#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default (bundled MNIST 5k, local files, no servers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec .venv/bin/nas demo "$@"
