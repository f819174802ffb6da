#!/usr/bin/env bash
# Evaluate a checkpoint on GPU: one device, or DEVICE_NUM GPUs of this machine with mpirun (counts summed).
#   bash scripts/run_eval_gpu.sh CONFIG DATA_PATH CHECKPOINT [DEVICE_NUM] [-- extra eval.py options]
# Example (a downloaded checkpoint, 4 GPUs):
#   bash scripts/run_eval_gpu.sh config/resnet50_imagenet2012_config.yaml /data/imagenet resnet50_dropcov.ckpt 4
# DATA_PATH holds val/ (or pass -- --eval_dataset_path VAL_FOLDER); results go to ./output/eval_results.json
# unless -- --output_path DIR or -- --output_file FILE is given.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
[ $# -ge 3 ] || usage
CONFIG="$1"; DATA_PATH="$2"; CHECKPOINT="$3"; shift 3
DEVICE_NUM=1
if [ $# -gt 0 ] && [ "$1" != "--" ]; then DEVICE_NUM="$1"; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift

[[ "$DEVICE_NUM" =~ ^[1-9][0-9]*$ ]] || { echo "error: DEVICE_NUM must be a positive integer, got '$DEVICE_NUM'" >&2; exit 2; }
[ -f "$CONFIG" ] || { echo "error: config file not found: $CONFIG" >&2; exit 2; }
[ -e "$DATA_PATH" ] || { echo "error: DATA_PATH does not exist: $DATA_PATH" >&2; exit 2; }
[ -f "$CHECKPOINT" ] || { echo "error: CHECKPOINT file not found: $CHECKPOINT" >&2; exit 2; }

if [ -x "$REPO_ROOT/.venv/bin/python" ]; then export PATH="$REPO_ROOT/.venv/bin:$PATH"; fi
if [ "$DEVICE_NUM" -eq 1 ]; then
  exec python "$REPO_ROOT/eval.py" --config_path "$CONFIG" --data_path "$DATA_PATH" \
    --checkpoint_file_path "$CHECKPOINT" --device_target GPU "$@"
fi
command -v mpirun >/dev/null || { echo "error: mpirun not found: install OpenMPI 4.x for multi-GPU evaluation, or use DEVICE_NUM 1" >&2; exit 2; }
if command -v nvidia-smi >/dev/null; then
  visible=$(nvidia-smi -L | wc -l)
  [ "$DEVICE_NUM" -le "$visible" ] || { echo "error: DEVICE_NUM=$DEVICE_NUM but nvidia-smi lists $visible GPUs" >&2; exit 2; }
fi
exec mpirun --allow-run-as-root -n "$DEVICE_NUM" -x PATH -x LD_LIBRARY_PATH --merge-stderr-to-stdout \
  python "$REPO_ROOT/eval.py" --config_path "$CONFIG" --data_path "$DATA_PATH" \
  --checkpoint_file_path "$CHECKPOINT" --run_distribute True --device_num "$DEVICE_NUM" --device_target GPU "$@"
