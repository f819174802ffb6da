#!/usr/bin/env bash
# Data-parallel training with MindSpore's msrun launcher: N processes on this machine, on GPU or CPU.
#   bash scripts/run_distribute_train_msrun.sh WORKER_NUM CONFIG DATA_PATH [OUTPUT_PATH] [-- extra train.py options]
# Example (2 CPU processes):
#   bash scripts/run_distribute_train_msrun.sh 2 config/digits_demo_cpu.yaml ./data/digits ./output/dp -- --device_target CPU
# Environment: MASTER_ADDR (127.0.0.1), MASTER_PORT (8118), CLUSTER_TIME_OUT (seconds to wait for all workers, 600).
# Worker logs: OUTPUT_PATH/msrun_log/worker_<r>.log; rank 0 also writes OUTPUT_PATH/train.log.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -ge 3 ] || usage
WORKER_NUM="$1"; CONFIG="$2"; DATA_PATH="$3"; shift 3
OUTPUT_PATH="./output"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then OUTPUT_PATH="$1"; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-8118}"
CLUSTER_TIME_OUT="${CLUSTER_TIME_OUT:-600}"

require_positive_int WORKER_NUM "$WORKER_NUM"
[[ "$MASTER_PORT" =~ ^[0-9]+$ ]] && [ "$MASTER_PORT" -ge 1024 ] && [ "$MASTER_PORT" -le 65535 ] \
  || die "MASTER_PORT must be a port number in 1024-65535, got '$MASTER_PORT'"
require_config "$CONFIG"
require_data_path "$DATA_PATH"

use_repo_venv
command -v msrun >/dev/null || die "msrun not found (it ships with MindSpore >= 2.3): activate the environment that has MindSpore"
mkdir -p "$OUTPUT_PATH"
exec msrun --worker_num="$WORKER_NUM" --local_worker_num="$WORKER_NUM" --master_addr="$MASTER_ADDR" \
  --master_port="$MASTER_PORT" --log_dir="$OUTPUT_PATH/msrun_log" --join=True \
  --cluster_time_out="$CLUSTER_TIME_OUT" \
  "$REPO_ROOT/train.py" --config_path "$CONFIG" --run_distribute True --device_num "$WORKER_NUM" \
  --data_path "$DATA_PATH" --output_path "$OUTPUT_PATH" "$@"
