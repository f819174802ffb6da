#!/usr/bin/env bash
# Set up the environment (with test requirements, and OpenMPI where it can: scripts/install_openmpi.sh) and run the
# whole test suite, slow tests included.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh --dev
bash scripts/install_openmpi.sh || true  # without it the mpirun launch tests skip, saying why
export PATH="$PWD/${VENV:-.venv}/bin:$PATH"   # msrun workers start plain `python`
exec python -m pytest tests "$@"
