#!/usr/bin/env bash
# Evaluate a checkpoint on GPU: one device, or DEVICE_NUM GPUs of this machine with mpirun (counts summed).
#   bash scripts/run_eval_gpu.sh CONFIG DATA_PATH CHECKPOINT [DEVICE_NUM] [-- extra eval.py options]
# Example (a downloaded checkpoint, 4 GPUs):
#   bash scripts/run_eval_gpu.sh config/resnet50_imagenet2012_config.yaml /data/imagenet resnet50_dropcov.ckpt 4
# DATA_PATH holds val/ (or pass -- --eval_dataset_path VAL_FOLDER); results go to ./output/eval_results.json
# unless -- --output_path DIR or -- --output_file FILE is given.
#
# With DEVICE_NUM > 1: rank logs in ./output/mpirun_log/1/rank.<r>/stdout (EVAL_LOG_DIR=... to change), rank 0's shown;
# a user error in the ranks is their one line and status 2, Ctrl-C stops every rank (status 130). HOSTFILE and
# DEVICE_TARGET=CPU as for scripts/run_distribute_train_gpu.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/mpirun_job.sh"
handle_help "$@"
[ $# -ge 3 ] || usage
CONFIG="$1"; DATA_PATH="$2"; CHECKPOINT="$3"; shift 3
DEVICE_NUM=1
if [ $# -gt 0 ] && [ "$1" != "--" ]; then DEVICE_NUM="$1"; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift

require_positive_int DEVICE_NUM "$DEVICE_NUM"
require_config "$CONFIG"
require_data_path "$DATA_PATH"
[ -f "$CHECKPOINT" ] || die "CHECKPOINT file not found: $CHECKPOINT"

require_device_target
use_repo_venv
if [ "$DEVICE_NUM" -eq 1 ]; then
  exec python "$REPO_ROOT/eval.py" --config_path "$CONFIG" --data_path "$DATA_PATH" \
    --checkpoint_file_path "$CHECKPOINT" --device_target "$DEVICE_TARGET" "$@"
fi
require_mpirun_gpus "$DEVICE_NUM" "for multi-GPU evaluation; or use DEVICE_NUM 1"
mpirun_env_args
mpirun_launch_args
run_mpirun_job eval.py "$DEVICE_NUM" "${EVAL_LOG_DIR:-./output/mpirun_log}" "${MPIRUN_ARGS[@]}" -n "$DEVICE_NUM" \
  "${MPIRUN_ENV[@]}" python "$REPO_ROOT/eval.py" --config_path "$CONFIG" --data_path "$DATA_PATH" \
  --checkpoint_file_path "$CHECKPOINT" --run_distribute True --device_num "$DEVICE_NUM" --device_target "$DEVICE_TARGET" "$@"
