#!/usr/bin/env bash
# Create .venv and install the project with pinned dependencies (constraints.txt). Re-running is cheap:
# it reinstalls only when pyproject.toml or constraints.txt changed. NAS_EXTRA=gpu picks tensorflow[and-cuda].
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${NAS_EXTRA:-cpu}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: $python is not Python 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-$extra"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[$extra,dev,services]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
