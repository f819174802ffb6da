#!/usr/bin/env bash
# Data-parallel training on N GPUs of this machine with mpirun (OpenMPI) and NCCL.
#   bash scripts/run_distribute_train_gpu.sh DEVICE_NUM CONFIG DATA_PATH [OUTPUT_PATH] [-- extra train.py options]
# Example (the published recipe: 4 GPUs x batch 64):
#   bash scripts/run_distribute_train_gpu.sh 4 config/resnet50_imagenet2012_config.yaml /data/imagenet ./output
# Each rank's output goes to OUTPUT_PATH/log_output/1/rank.<r>/stdout; rank 0 also writes OUTPUT_PATH/train.log.
# Continue an interrupted run with the same command plus: -- --resume auto
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
[ $# -ge 3 ] || usage
DEVICE_NUM="$1"; CONFIG="$2"; DATA_PATH="$3"; shift 3
OUTPUT_PATH="./output"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then OUTPUT_PATH="$1"; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift

[[ "$DEVICE_NUM" =~ ^[1-9][0-9]*$ ]] || { echo "error: DEVICE_NUM must be a positive integer, got '$DEVICE_NUM'" >&2; exit 2; }
[ -f "$CONFIG" ] || { echo "error: config file not found: $CONFIG" >&2; exit 2; }
[ -e "$DATA_PATH" ] || { echo "error: DATA_PATH does not exist: $DATA_PATH" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "error: mpirun not found: install OpenMPI 4.x (GPU data parallel needs it), or use scripts/run_distribute_train_msrun.sh" >&2; exit 2; }
if command -v nvidia-smi >/dev/null; then
  visible=$(nvidia-smi -L | wc -l)
  [ "$DEVICE_NUM" -le "$visible" ] || { echo "error: DEVICE_NUM=$DEVICE_NUM but nvidia-smi lists $visible GPUs" >&2; exit 2; }
fi

if [ -x "$REPO_ROOT/.venv/bin/python" ]; then export PATH="$REPO_ROOT/.venv/bin:$PATH"; fi
mkdir -p "$OUTPUT_PATH"
forward_env=(-x PATH)  # the ranks see this environment (venv first on PATH, CUDA libraries)
[ -n "${LD_LIBRARY_PATH:-}" ] && forward_env+=(-x LD_LIBRARY_PATH)
exec mpirun --allow-run-as-root -n "$DEVICE_NUM" "${forward_env[@]}" \
  --output-filename "$OUTPUT_PATH/log_output" --merge-stderr-to-stdout \
  python "$REPO_ROOT/train.py" --config_path "$CONFIG" --run_distribute True --device_num "$DEVICE_NUM" \
  --device_target GPU --data_path "$DATA_PATH" --output_path "$OUTPUT_PATH" "$@"
