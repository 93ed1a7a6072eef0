#!/usr/bin/env bash
# Set everything up, lint, then run the whole test suite (slow integration tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/ruff check nas flows bench tests
.venv/bin/mypy nas flows
.venv/bin/python -m pytest -q "$@"
