#!/usr/bin/env bash
# Data-parallel training with mpirun (OpenMPI) and NCCL on DEVICE_NUM GPUs: of this machine, or of several nodes
#   bash scripts/run_distribute_train_gpu.sh DEVICE_NUM CONFIG DATA_PATH [OUTPUT_PATH] [-- extra train.py options]
# Example (the published recipe: 4 GPUs x batch 64):
#   bash scripts/run_distribute_train_gpu.sh 4 config/resnet50_imagenet2012_config.yaml /data/imagenet ./output
# Several nodes: HOSTFILE=hosts (lines "node1 slots=4") and run this once, on one node; repository, venv, data
# and CUDA_HOME must sit at the same paths on every node (docs/GPU.md). Rank logs: OUTPUT_PATH/log_output/1/rank.<r>/stdout.
# Rank 0 also writes OUTPUT_PATH/train.log. Continue an interrupted run with the same command plus: -- --resume auto
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
mpirun_launch_args
exec mpirun "${MPIRUN_ARGS[@]}" -n "$DEVICE_NUM" "${MPIRUN_ENV[@]}" \
  --output-filename "$OUTPUT_PATH/log_output" --merge-stderr-to-stdout \
  python "$REPO_ROOT/train.py" --config_path "$CONFIG" --run_distribute True --device_num "$DEVICE_NUM" \
  --device_target GPU --data_path "$DATA_PATH" --output_path "$OUTPUT_PATH" "$@"
