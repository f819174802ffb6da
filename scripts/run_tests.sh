#!/usr/bin/env bash
# Set up the environment (with test requirements) and run the whole test suite, slow tests included.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh --dev
export PATH="$PWD/${VENV:-.venv}/bin:$PATH"   # msrun workers start plain `python`
exec python -m pytest tests "$@"
