#!/usr/bin/env bash
# Create .venv with the pinned packages and fetch the real helm and kubectl into .tools/bin.
# Idempotent: re-running only reinstalls when pyproject.toml, requirements/lock.txt or the torch flavour changed.
#
#   scripts/setup.sh            torch and torchvision as pinned, from PyPI (CUDA build: what the images run)
#   scripts/setup.sh --cpu      torch and torchvision from the PyTorch CPU wheel index (no NVIDIA libraries);
#                               the same as DYNAMICS_TORCH=cpu scripts/setup.sh
#   scripts/setup.sh --dry-run  print the install commands instead of running them
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,8s/^# \{0,1\}//p' "$0"; }
flavour="${DYNAMICS_TORCH:-default}"
dry_run=0
for arg in "$@"; do
  case "$arg" in
    --cpu) flavour=cpu ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$flavour" in
  default|cpu) ;;
  *) echo "error: DYNAMICS_TORCH='$flavour': use 'cpu' or leave it unset" >&2; exit 2 ;;
esac
# The CPU wheels carry a '+cpu' local version; the lock's torch==X constraint accepts them (PEP 440).
CPU_INDEX="${DYNAMICS_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"

run() {  # a command, or with --dry-run its shell-quoted form
  if [ "$dry_run" = 1 ]; then printf '%q ' "$@" | sed 's/ $//'; echo; else "$@"; fi
}

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: Python 3.11 is required (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  run "$PYTHON" -m venv .venv
fi

stamp=.venv/.dynamics-installed
# (the default flavour's stamp is what it always was: an existing .venv is not reinstalled for nothing)
want=$( (cat pyproject.toml requirements/lock.txt; [ "$flavour" = default ] || echo "torch=$flavour") \
  | sha256sum | cut -d' ' -f1)
torch_pin=$(grep -E '^torch==' requirements/lock.txt)
vision_pin=$(grep -E '^torchvision==' requirements/lock.txt)
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ "$dry_run" = 1 ]; then
  echo "==> installing dynamics and pinned dependencies into .venv ($torch_pin, $vision_pin, torch flavour: $flavour)"
  run "${pip[@]}" --upgrade "pip>=24"
  if [ "$flavour" = cpu ]; then
    # torch from the CPU index first; its own dependencies (and everything else) from the usual index.
    run "${pip[@]}" -c requirements/lock.txt --index-url "$CPU_INDEX" \
      --extra-index-url "${PIP_INDEX_URL:-https://pypi.org/simple}" "$torch_pin+cpu" "$vision_pin+cpu"
  fi
  run "${pip[@]}" -c requirements/lock.txt -e '.[dev]'
  [ "$dry_run" = 1 ] || echo "$want" > "$stamp"
fi

echo "==> helm and kubectl"
run .venv/bin/python scripts/fetch_tools.py
echo "==> ready: source .venv/bin/activate; export PATH=\"$PWD/.tools/bin:\$PATH\""
