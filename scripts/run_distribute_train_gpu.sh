#!/usr/bin/env bash
# Data-parallel training on N GPUs of this machine with mpirun (OpenMPI) and NCCL.
#   bash scripts/run_distribute_train_gpu.sh DEVICE_NUM CONFIG DATA_PATH [OUTPUT_PATH] [-- extra train.py options]
# Example (the published recipe: 4 GPUs x batch 64):
#   bash scripts/run_distribute_train_gpu.sh 4 config/resnet50_imagenet2012_config.yaml /data/imagenet ./output
# Each rank's output goes to OUTPUT_PATH/log_output/1/rank.<r>/stdout; rank 0 also writes OUTPUT_PATH/train.log.
# Continue an interrupted run with the same command plus: -- --resume auto
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -ge 3 ] || usage
DEVICE_NUM="$1"; CONFIG="$2"; DATA_PATH="$3"; shift 3
OUTPUT_PATH="./output"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then OUTPUT_PATH="$1"; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift

require_positive_int DEVICE_NUM "$DEVICE_NUM"
require_config "$CONFIG"
require_data_path "$DATA_PATH"
require_mpirun_gpus "$DEVICE_NUM" "GPU data parallel needs it; or use scripts/run_distribute_train_msrun.sh"

use_repo_venv
mkdir -p "$OUTPUT_PATH"
mpirun_env_args
exec mpirun --allow-run-as-root -n "$DEVICE_NUM" "${MPIRUN_ENV[@]}" \
  --output-filename "$OUTPUT_PATH/log_output" --merge-stderr-to-stdout \
  python "$REPO_ROOT/train.py" --config_path "$CONFIG" --run_distribute True --device_num "$DEVICE_NUM" \
  --device_target GPU --data_path "$DATA_PATH" --output_path "$OUTPUT_PATH" "$@"
