#!/usr/bin/env bash
# Self-test of a GPU installation (docs/GPU.md), a few minutes on one GPU:
#   bash scripts/gpu_smoke.sh [OUTPUT_DIR]      (default ./output/gpu_smoke; GPUS=1 or 2 ranks for mpirun, default 2
#                                               where two GPUs are visible)
# 1. GPU probe and the first kernel's time   2. check_env --gpu   3. train -> eval -> resume on one GPU (the digits)
# 4. an AMP O2 training run   5. mpirun: the first collective's time, each rank on its own GPU, an epoch of data
# parallel. Prints a verdict table and where each log is. Run it again at will: each run starts its runs afresh.
# Stops at once, with one line, where MindSpore sees no usable GPU.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
handle_help "$@"
[ $# -le 1 ] || usage
OUT="$(mkdir -p "${1:-./output/gpu_smoke}" && cd "${1:-./output/gpu_smoke}" && pwd)"
LOGS="$OUT/logs"
mkdir -p "$LOGS"
use_repo_venv
cd "$REPO_ROOT"

# 1. the probe: no usable GPU is the one-line error of setup_device (exit 2), and the smoke test ends there
python - "$LOGS/probe.log" <<'PY' || exit $?
import sys
import time

from src.cli import run_entry_point
from src.runtime.environment import configure_cpu_environment


def probe(_argv):
    configure_cpu_environment("GPU")
    from src.runtime.device import setup_device

    setup_device("GPU", "PYNATIVE_MODE", 0)
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn

    conv = nn.Conv2d(64, 64, 3)
    x = Tensor(np.ones((8, 64, 56, 56), np.float32))
    started = time.perf_counter()
    conv(x).asnumpy()
    first = time.perf_counter() - started
    started = time.perf_counter()
    conv(x).asnumpy()
    second = time.perf_counter() - started
    line = (f"{ms.hal.device_count('GPU')} GPU(s); first 3x3 convolution {first:.1f} s (plugin start and kernel "
            f"load or JIT), second {1000 * second:.1f} ms")
    if first > 60:
        line += "; a slow first kernel is a PTX JIT compile: keep CUDA_CACHE_PATH (docs/GPU.md)"
    with open(sys.argv[1], "w") as log:
        log.write(line + "\n")
    print(f"probe: {line}")


sys.exit(run_entry_point(probe, [], program="gpu_smoke.sh"))
PY

RESULTS=()
record() {  # name, verdict, seconds, log
  RESULTS+=("$(printf '%-34s %-5s %6s s  %s' "$1" "$2" "$3" "$4")")
}
run_step() {  # name, log, command...: PASS when the command exits 0
  local name="$1" log="$2" start=$SECONDS
  shift 2
  echo "running: $name (log $log)"
  if "$@" >"$log" 2>&1; then record "$name" PASS $((SECONDS - start)) "$log"; return 0; fi
  record "$name" FAIL $((SECONDS - start)) "$log"
  return 1
}
record "GPU probe" PASS - "$LOGS/probe.log"

run_step "check_env --gpu" "$LOGS/check_env.log" python scripts/check_env.py --gpu

DATA="$OUT/digits"
[ -d "$DATA/train" ] || python scripts/make_digits_dataset.py "$DATA" >"$LOGS/data.log" 2>&1 \
  || die "could not build the digits data set (see $LOGS/data.log)"
CONFIG=config/digits_demo_cpu.yaml
COMMON=(--config_path "$CONFIG" --data_path "$DATA" --device_target GPU --num_parallel_workers 4)
TRAIN=("${COMMON[@]}" --output_path "$OUT/train" --log_interval 10)
FRESH=(--overwrite True)  # a second smoke test into the same folder starts its runs afresh

run_step "train 2 epochs, 1 GPU" "$LOGS/train.log" python train.py "${TRAIN[@]}" --epoch_size 2 "${FRESH[@]}"
if [ -f "$OUT/train/checkpoints/best.ckpt" ]; then
  run_step "eval best.ckpt, 1 GPU" "$LOGS/eval.log" python eval.py "${COMMON[@]}" --output_path "$OUT/train" \
    --checkpoint_file_path "$OUT/train/checkpoints/best.ckpt"
  run_step "resume to 3 epochs, 1 GPU" "$LOGS/resume.log" python train.py "${TRAIN[@]}" --epoch_size 3 --resume auto
  grep -q "resumed from" "$LOGS/resume.log" || RESULTS[-1]="${RESULTS[-1]/PASS/FAIL}  (started from scratch)"
fi

# dynamic loss scaling skips overflowing steps; train.py stops with an error on a non-finite loss
run_step "AMP O2, 20 steps, 1 GPU" "$LOGS/amp_o2.log" python train.py "${COMMON[@]}" --output_path "$OUT/amp_o2" "${FRESH[@]}" \
  --amp_level O2 --loss_scale_type dynamic --loss_scale 1024 --epoch_size 1 --train_steps_per_epoch 20 \
  --run_eval False --save_checkpoint False --log_interval 5

visible="$(visible_gpu_count)"
ranks="${GPUS:-$([ "${visible:-1}" -ge 2 ] && echo 2 || echo 1)}"
if command -v mpirun >/dev/null; then
  mpirun_env_args
  mpirun_launch_args
  # the first collective: NCCL's kernels are JIT-compiled there on GPUs newer than Pascal (CUDA_CACHE_PATH keeps them)
  run_step "first all-reduce, $ranks rank(s)" "$LOGS/collective.log" mpirun "${MPIRUN_ARGS[@]}" -n "$ranks" \
    "${MPIRUN_ENV[@]}" --merge-stderr-to-stdout python -m src.tools.collective_probe --device_target GPU
  # each rank on its own GPU: the ranks' start lines name as many devices as there are ranks
  devices="$(grep -hoE '^rank [0-9]+ of [0-9]+ \(local rank [0-9]+ on [^)]+\): device [^,]+' "$LOGS/collective.log" \
    | sed -E 's/^rank [0-9]+ of [0-9]+ \(local rank [0-9]+ on ([^)]+)\): device (.*)$/\1 \2/' | sort -u | wc -l)"
  if [ "$devices" -eq "$ranks" ]; then
    record "each rank on its own GPU" PASS - "$LOGS/collective.log"
  else
    record "each rank on its own GPU" FAIL - "$LOGS/collective.log ($devices distinct device(s) for $ranks ranks)"
  fi
  run_step "mpirun $ranks rank(s), 1 epoch" "$LOGS/mpirun.log" bash scripts/run_distribute_train_gpu.sh "$ranks" \
    "$CONFIG" "$DATA" "$OUT/mpirun" -- --epoch_size 1 --num_parallel_workers 4 --log_interval 10 "${FRESH[@]}"
else
  record "mpirun $ranks rank(s)" SKIP - "mpirun not installed (OpenMPI 4.x: apt-get install openmpi-bin)"
fi

echo
echo "gpu_smoke: $(head -n 1 "$LOGS/probe.log")"
grep -h '^collective_probe: ' "$LOGS/collective.log" 2>/dev/null | sed 's/^collective_probe/gpu_smoke/'
echo "gpu_smoke: CUDA's JIT cache: ${CUDA_CACHE_PATH:-$HOME/.nv/ComputeCache} (CUDA_CACHE_PATH); a second run's first" \
  "kernel and first all-reduce read their compiled code from there"
printf '%s\n' "${RESULTS[@]}"
echo "logs: $LOGS; runs: $OUT"
! printf '%s\n' "${RESULTS[@]}" | grep -q " FAIL "
