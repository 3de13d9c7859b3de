#!/usr/bin/env bash
# Create .venv with the pinned packages and fetch the real helm and kubectl into .tools/bin.
# Idempotent: re-running only reinstalls when pyproject.toml or requirements/lock.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: Python 3.11 is required (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.dynamics-installed
want=$(cat pyproject.toml requirements/lock.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing dynamics and pinned dependencies into .venv (torch==2.14.1, torchvision==0.29.1, ...)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements/lock.txt -e '.[dev]'
  echo "$want" > "$stamp"
fi

echo "==> helm and kubectl"
.venv/bin/python scripts/fetch_tools.py
echo "==> ready: source .venv/bin/activate; export PATH=\"$PWD/.tools/bin:\$PATH\""
