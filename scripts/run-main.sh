#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default: a Bayesian search on the bundled
# MNIST 5k subset (params.yaml), through the nas-search flow on Prefect's temporary local API, logged to
# ./mlflow.db and ./mlruns. Extra arguments go to `nas search` (e.g. --set search.max_models=4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
exec .venv/bin/nas search "$@"
