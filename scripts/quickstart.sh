#!/usr/bin/env bash
# The quickstart on a fresh machine: install, generate the demo data, run the whole pipeline locally
# (embed -> cluster-fit -> assign -> scale -> train -> eval) on CPU, and print the report.
#   scripts/quickstart.sh                                   # DynamiCS, alpha 0.2
#   scripts/quickstart.sh examples/quickstart-uniform.yaml  # uniform sampling at the same budget
#   scripts/quickstart.sh SPEC --replace --set sample.alpha=0.5  # options after SPEC go to dynamics-submit
#   DYNAMICS_TORCH=cpu scripts/quickstart.sh                # install torch from the CPU wheel index
set -euo pipefail
cd "$(dirname "$0")/.."
spec="${1:-examples/quickstart.yaml}"
[ "$#" -gt 0 ] && shift
bash scripts/setup.sh
export PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH"
if [ ! -f demo-data/manifest.json ]; then
  echo "==> generating demo data in demo-data/"
  dynamics demo-data demo-data
fi
echo "==> dynamics-submit $spec --local $*"
exec dynamics-submit "$spec" --local "$@"
