# Shared helpers of the launch scripts (sourced, not run). Each check prints "error: ..." and exits 2.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "error: $*" >&2; exit 2; }

# The calling script's header comment (lines 2-7) as its usage text.
usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

require_positive_int() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"; }
require_config() { [ -f "$1" ] || die "config file not found: $1"; }
require_data_path() { [ -e "$1" ] || die "DATA_PATH does not exist: $1"; }

# Launched processes (mpirun ranks, msrun workers) start plain `python`: use the project's venv if any.
use_repo_venv() { if [ -x "$REPO_ROOT/.venv/bin/python" ]; then export PATH="$REPO_ROOT/.venv/bin:$PATH"; fi; }

# mpirun must exist and, where nvidia-smi can tell, DEVICE_NUM must not exceed the visible GPUs.
require_mpirun_gpus() {
  command -v mpirun >/dev/null || die "mpirun not found: install OpenMPI 4.x ($2)"
  if command -v nvidia-smi >/dev/null; then
    local visible
    visible=$(nvidia-smi -L | wc -l)
    [ "$1" -le "$visible" ] || die "DEVICE_NUM=$1 but nvidia-smi lists $visible GPUs"
  fi
}

# Environment forwarded to mpirun ranks: PATH (venv first) and the CUDA library path when set.
mpirun_env_args() {
  MPIRUN_ENV=(-x PATH)
  if [ -n "${LD_LIBRARY_PATH:-}" ]; then MPIRUN_ENV+=(-x LD_LIBRARY_PATH); fi
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then MPIRUN_ENV+=(-x CUDA_VISIBLE_DEVICES); fi
}
