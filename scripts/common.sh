# Shared helpers of the launch scripts (sourced, not run). Each check prints "SCRIPT_NAME: error: ..." and exits 2,
# as the entry points print "train.py: error: ...".

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT_NAME="$(basename "$0")"

die() { echo "$SCRIPT_NAME: error: $*" >&2; exit 2; }

# The calling script's header comment: its first paragraph (up to a bare "#" line) is the usage text printed on a
# wrong call (exit 2); --help or -h as the first argument prints all of it (exit 0). #SBATCH lines are not part of it.
script_header() { awk 'NR > 1 && /^#SBATCH/ { next } NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${SCRIPT_PATH:-$0}"; }
usage() { script_header | awk '/^$/ { exit } { print }' >&2; exit 2; }
handle_help() { case "${1:-}" in --help | -h) script_header; exit 0 ;; esac; }

require_positive_int() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"; }
require_config() { [ -f "$1" ] || die "config file not found: $1"; }
require_data_path() { [ -e "$1" ] || die "DATA_PATH does not exist: $1"; }

# Launched processes (mpirun ranks, msrun workers) start plain `python`: use the project's venv if any.
use_repo_venv() { if [ -x "$REPO_ROOT/.venv/bin/python" ]; then export PATH="$REPO_ROOT/.venv/bin:$PATH"; fi; }

# GPUs this process may use: the entries of CUDA_VISIBLE_DEVICES when it is set (empty: none), else the
# "GPU <n>:" lines of `nvidia-smi -L` (its indented MIG lines are slices of those GPUs, not more GPUs);
# prints nothing when neither can tell.
visible_gpu_count() {
  if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then
    local entries
    IFS=, read -r -a entries <<<"$CUDA_VISIBLE_DEVICES"
    local count=0 entry
    for entry in "${entries[@]}"; do [ -n "${entry// /}" ] && count=$((count + 1)); done
    echo "$count"
  elif command -v nvidia-smi >/dev/null; then
    nvidia-smi -L 2>/dev/null | grep -c '^GPU [0-9]' || true
  fi
}

# mpirun must exist and, on this node, DEVICE_NUM must not exceed the visible GPUs. With a hostfile, or inside a
# Slurm allocation (mpirun then takes the allocation's nodes), the ranks spread over several nodes whose GPUs this
# node cannot see: only mpirun itself is checked. DEVICE_TARGET=CPU (CPU ranks) needs no GPU.
require_mpirun_gpus() {
  command -v mpirun >/dev/null || die "mpirun not found: install OpenMPI 4.x ($2)"
  [ -n "${HOSTFILE:-}" ] || [ -n "${SLURM_JOB_ID:-}" ] || [ "${DEVICE_TARGET:-GPU}" = CPU ] && return 0
  local visible
  visible="$(visible_gpu_count)"
  [ -z "$visible" ] || [ "$1" -le "$visible" ] || die "DEVICE_NUM=$1 but this machine shows $visible GPU(s) ($(
    if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then echo "CUDA_VISIBLE_DEVICES='$CUDA_VISIBLE_DEVICES'"; else echo "nvidia-smi -L"; fi))"
}

# DEVICE_TARGET: GPU (default), or CPU for CPU ranks (MindSpore's CPU collectives; a check of the launch on a
# machine without a GPU).
require_device_target() {
  DEVICE_TARGET="${DEVICE_TARGET:-GPU}"
  [ "$DEVICE_TARGET" = GPU ] || [ "$DEVICE_TARGET" = CPU ] || die "DEVICE_TARGET must be GPU or CPU, got '$DEVICE_TARGET'"
}

# Variables every mpirun rank needs, local or on another node (mpirun starts remote ranks with a bare
# environment): PATH (the venv's python), the CUDA libraries and MindSpore's plugin choice (LD_LIBRARY_PATH,
# CUDA_HOME), the CUDA JIT cache's folder (its size is MindSpore's: it sets CUDA_CACHE_MAXSIZE itself), MindSpore's
# log level, the address of MindSpore's scheduler for CPU ranks
# (MASTER_ADDR, MASTER_PORT) and every NCCL_* setting. Only set ones go. CUDA_VISIBLE_DEVICES goes with a hostfile
# (the user's choice of GPUs, the same on every node); inside a Slurm allocation each node keeps its own (Slurm sets
# it per node, and nodes shared with other jobs have different sets); on one node the ranks inherit it.
MPIRUN_FORWARDED=(PATH LD_LIBRARY_PATH PYTHONPATH CUDA_HOME CUDA_DEVICE_ORDER CUDA_CACHE_PATH GLOG_v MASTER_ADDR
                  MASTER_PORT)
mpirun_env_args() {
  MPIRUN_ENV=()
  local name
  local names=("${MPIRUN_FORWARDED[@]}")
  if [ -n "${HOSTFILE:-}" ] && [ -z "${SLURM_JOB_ID:-}" ]; then names+=(CUDA_VISIBLE_DEVICES); fi
  for name in "${names[@]}" $(compgen -e | grep '^NCCL_' || true); do
    if [ -n "${!name+x}" ]; then MPIRUN_ENV+=(-x "$name"); fi
  done
}

# mpirun's own options: no core binding (with -n <= 2 OpenMPI pins each rank to one core, starving the data
# pipeline's decode threads), the hostfile when HOSTFILE is set (several nodes; mpirun is started once, there).
# Inside a Slurm allocation OpenMPI finds the nodes itself and starts its daemons with srun. MPIRUN_OPTIONS: more
# options of mpirun's own (e.g. "--prefix /opt/openmpi --mca btl_tcp_if_include eth1"), split at spaces.
mpirun_launch_args() {
  local extra=()
  read -r -a extra <<<"${MPIRUN_OPTIONS:-}"
  MPIRUN_ARGS=(--allow-run-as-root --bind-to none ${extra[@]+"${extra[@]}"})
  if [ -n "${HOSTFILE:-}" ]; then
    [ -f "$HOSTFILE" ] || die "HOSTFILE not found: $HOSTFILE"
    MPIRUN_ARGS+=(--hostfile "$HOSTFILE")
  fi
}
