#!/usr/bin/env bash
# Data-parallel training with mpirun (OpenMPI) and NCCL on DEVICE_NUM GPUs: of this machine, of a hostfile's nodes or of a Slurm allocation
#   bash scripts/run_distribute_train_gpu.sh DEVICE_NUM CONFIG DATA_PATH [OUTPUT_PATH] [-- extra train.py options]
# Example (the published recipe: 4 GPUs x batch 64):
#   bash scripts/run_distribute_train_gpu.sh 4 config/resnet50_imagenet2012_config.yaml /data/imagenet ./output
# Several nodes: HOSTFILE=hosts (lines "node1 slots=4"), or inside an allocation (Slurm: scripts/slurm_train_gpu.sbatch).
# DEVICE_TARGET=CPU runs CPU ranks. Rank logs: OUTPUT_PATH/mpirun_log/1/rank.<r>/stdout; rank 0's train.log in OUTPUT_PATH.
#
# Ctrl-C, SIGTERM or SIGUSR1 (`kill -USR1 <this script's pid>`) makes every rank save a checkpoint at its next stop
# check and stop; the script exits 0 (130 after Ctrl-C). A second signal stops at once. Continue with the same
# command plus: -- --resume auto. A user error in the ranks is their one line and status 2; a rank that died is one
# line naming it and its log, status 1 (mpirun alone answers Ctrl-C by killing the ranks a second later).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/mpirun_job.sh"
handle_help "$@"
[ $# -ge 3 ] || usage
DEVICE_NUM="$1"; CONFIG="$2"; DATA_PATH="$3"; shift 3
OUTPUT_PATH="./output"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then OUTPUT_PATH="$1"; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift

require_positive_int DEVICE_NUM "$DEVICE_NUM"
require_config "$CONFIG"
require_data_path "$DATA_PATH"
require_device_target
require_mpirun_gpus "$DEVICE_NUM" "GPU data parallel needs it; or use scripts/run_distribute_train_msrun.sh"

use_repo_venv
mpirun_env_args
mpirun_launch_args
RESUME_HINT="continue with the same command plus -- --resume auto"
run_mpirun_job train.py "$DEVICE_NUM" "$OUTPUT_PATH/mpirun_log" "${MPIRUN_ARGS[@]}" -n "$DEVICE_NUM" "${MPIRUN_ENV[@]}" \
  python "$REPO_ROOT/train.py" --config_path "$CONFIG" --run_distribute True --device_num "$DEVICE_NUM" \
  --device_target "$DEVICE_TARGET" --data_path "$DATA_PATH" --output_path "$OUTPUT_PATH" "$@"
