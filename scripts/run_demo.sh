#!/usr/bin/env bash
# The CPU demo: set up, build the handwritten-digits ImageFolder (real data shipped with
# scikit-learn), train ResNet-18 + DropCov on CPU in graph mode, evaluate the best checkpoint.
# Extra arguments go to train.py and eval.py, e.g. `bash scripts/run_demo.sh --epoch_size 2`.
# DEMO_DATA and DEMO_OUTPUT move the data folder (./data/digits) and the run folder (./output/digits_demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
VENV="${VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH"
CONFIG=config/digits_demo_cpu.yaml
DATA="${DEMO_DATA:-./data/digits}"
OUT="${DEMO_OUTPUT:-./output/digits_demo}"

[ -d "$DATA/train" ] || python scripts/make_digits_dataset.py "$DATA"
python train.py --config_path "$CONFIG" --data_path "$DATA" --output_path "$OUT" "$@"
ckpt="$OUT/checkpoints/best.ckpt"
[ -f "$ckpt" ] || ckpt="$(ls -t "$OUT"/checkpoints/*.ckpt | head -n 1)"
python eval.py --config_path "$CONFIG" --data_path "$DATA" --checkpoint_file_path "$ckpt" \
  --output_path "$OUT" "$@"
echo
echo "demo done: checkpoint $ckpt"
echo "           metrics   $OUT/metrics.jsonl, $OUT/eval_results.json"
echo "           plot      $OUT/metrics.png"
