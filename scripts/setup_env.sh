#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install its requirements.
#   bash scripts/setup_env.sh          runtime requirements (train, eval, demo)
#   bash scripts/setup_env.sh --dev    plus the test/dev requirements (pytest, scipy, torch CPU, ruff)
# VENV (default .venv in the repository) and PYTHON (default python3) can be overridden.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
requirements="requirements.txt"
[ "${1:-}" = "--dev" ] && requirements="requirements-dev.txt"

if ! "$PYTHON" -c 'import sys; sys.exit(0 if (3, 9) <= sys.version_info[:2] <= (3, 11) else 1)'; then
  echo "setup_env: $PYTHON is $("$PYTHON" --version 2>&1); MindSpore 2.10 wheels need Python 3.9-3.11" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup_env: creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(basename "$requirements" .txt)"
up_to_date() { [ -f "$1" ] && [ ! "$requirements" -nt "$1" ] && [ ! requirements.txt -nt "$1" ]; }
# the dev requirements include the runtime ones
if up_to_date "$VENV/.installed-requirements-dev"; then stamp="$VENV/.installed-requirements-dev"; fi
if ! up_to_date "$stamp"; then
  echo "setup_env: installing $requirements into $VENV (a few minutes on a fresh machine)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  touch "$stamp"
else
  echo "setup_env: $VENV already has $requirements"
fi

# oneDNN's headers (headers only: --no-deps skips Intel's 90 MB SYCL runtime) and the blocked-layout
# convolution kernels built from them (csrc/onednn_kernels.cc, config key conv_backend). A failed build is
# not fatal: conv_backend auto then falls back to MindSpore's own convolutions.
onednn_headers="$(grep -o 'onednn-devel==[0-9.]*' src/kernels/build.py)"
if [ ! -f "$VENV/include/oneapi/dnnl/dnnl.hpp" ]; then
  echo "setup_env: installing oneDNN headers ($onednn_headers)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$onednn_headers"
fi
if kernel="$("$VENV/bin/python" -m src.kernels.build)"; then
  echo "setup_env: oneDNN convolution kernels: $kernel"
else
  echo "setup_env: warning: the oneDNN convolution kernels were not built; conv_backend auto uses MindSpore's convolutions" >&2
fi
