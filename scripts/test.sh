#!/usr/bin/env bash
# Set everything up, lint, then run the whole test suite (slow integration tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The browser test drives Debian's headless Chromium against `mlflow ui`; install it where we may.
if ! command -v chromium > /dev/null && command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's chromium for the browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null) \
    || echo "could not install chromium: the browser test will fail; apt-get install chromium"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/ruff check nas flows bench tests
.venv/bin/mypy nas flows
.venv/bin/python -m pytest -q "$@"
