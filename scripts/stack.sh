#!/usr/bin/env bash
# The production-shaped stack on loopback: PostgreSQL, MLflow server (basic auth), Prefect server, two workers.
#   bash scripts/stack.sh up | status | env | down [--purge]      (see ops/stack.py)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -d /usr/lib/postgresql ] && command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's postgresql for the stack"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql > /dev/null
fi
exec .venv/bin/python -m ops.stack "$@"
