#!/usr/bin/env bash
# Set everything up, lint, then run the whole test suite (slow integration tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The browser test drives Debian's headless Chromium against `mlflow ui`, the stack tests run Debian's
# PostgreSQL; install what is missing where we may.
missing=()
command -v chromium > /dev/null || missing+=(chromium)
[ -d /usr/lib/postgresql ] || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's ${missing[*]} for the browser and stack tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null) \
    || echo "could not install ${missing[*]}: the tests that need them will fail; apt-get install ${missing[*]}"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/ruff check nas flows bench tests
.venv/bin/mypy nas flows
.venv/bin/python -m pytest -q --durations=40 "$@"
if [ $# -eq 0 ]; then
  # Training, building and morphisms (not the searches) again on Keras' JAX backend, as the GPU machines run.
  KERAS_BACKEND=jax .venv/bin/python -m pytest -q -m "not slow" tests/training tests/architectures
fi
