#!/usr/bin/env bash
# Train on one GPU.
#   bash scripts/run_standalone_train_gpu.sh CONFIG DATA_PATH [OUTPUT_PATH] [DEVICE_ID] [-- extra train.py options]
# Example:
#   bash scripts/run_standalone_train_gpu.sh config/resnet50_imagenet2012_config.yaml /data/imagenet ./output 0
# DATA_PATH holds train/ and val/ (ImageNet layout) or the CIFAR-10 binaries; the log goes to
# OUTPUT_PATH/train.log. Continue an interrupted run by adding: -- --resume auto
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
[ $# -ge 2 ] || usage
CONFIG="$1"; DATA_PATH="$2"; shift 2
OUTPUT_PATH="./output"; DEVICE_ID=0
if [ $# -gt 0 ] && [ "$1" != "--" ]; then OUTPUT_PATH="$1"; shift; fi
if [ $# -gt 0 ] && [ "$1" != "--" ]; then DEVICE_ID="$1"; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift

[ -f "$CONFIG" ] || { echo "error: config file not found: $CONFIG" >&2; exit 2; }
[ -e "$DATA_PATH" ] || { echo "error: DATA_PATH does not exist: $DATA_PATH" >&2; exit 2; }
[[ "$DEVICE_ID" =~ ^[0-9]+$ ]] || { echo "error: DEVICE_ID must be a non-negative integer, got '$DEVICE_ID'" >&2; exit 2; }

if [ -x "$REPO_ROOT/.venv/bin/python" ]; then export PATH="$REPO_ROOT/.venv/bin:$PATH"; fi
exec python "$REPO_ROOT/train.py" --config_path "$CONFIG" --data_path "$DATA_PATH" \
  --output_path "$OUTPUT_PATH" --device_target GPU --device_id "$DEVICE_ID" "$@"
