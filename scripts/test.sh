#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, lints, then runs pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH"
echo "==> ruff"
ruff check dynamics tests benchmarks scripts
echo "==> pytest"
exec python -m pytest "$@"
