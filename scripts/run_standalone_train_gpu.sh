#!/usr/bin/env bash
# Train on one GPU.
#   bash scripts/run_standalone_train_gpu.sh CONFIG DATA_PATH [OUTPUT_PATH] [DEVICE_ID] [-- extra train.py options]
# Example:
#   bash scripts/run_standalone_train_gpu.sh config/resnet50_imagenet2012_config.yaml /data/imagenet ./output 0
# DATA_PATH holds train/ and val/ (ImageNet layout) or the CIFAR-10 binaries; the log goes to
# OUTPUT_PATH/train.log. Continue an interrupted run by adding: -- --resume auto
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
handle_help "$@"
[ $# -ge 2 ] || usage
CONFIG="$1"; DATA_PATH="$2"; shift 2
OUTPUT_PATH="./output"; DEVICE_ID=0
if [ $# -gt 0 ] && [ "$1" != "--" ]; then OUTPUT_PATH="$1"; shift; fi
if [ $# -gt 0 ] && [ "$1" != "--" ]; then DEVICE_ID="$1"; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift

require_config "$CONFIG"
require_data_path "$DATA_PATH"
[[ "$DEVICE_ID" =~ ^[0-9]+$ ]] || die "DEVICE_ID must be a non-negative integer, got '$DEVICE_ID'"

use_repo_venv
exec python "$REPO_ROOT/train.py" --config_path "$CONFIG" --data_path "$DATA_PATH" \
  --output_path "$OUTPUT_PATH" --device_target GPU --device_id "$DEVICE_ID" "$@"
