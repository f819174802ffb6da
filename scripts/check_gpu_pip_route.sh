#!/usr/bin/env bash
# Opt-in check of the pip route to MindSpore's GPU plugin, on any x86_64 Linux machine, GPU or not (~2.5 GB download).
#   bash scripts/check_gpu_pip_route.sh [WORK_DIR]        (default /tmp/dropcov-cuda11-pip; PYTHON=python3.9-3.11)
# In WORK_DIR/venv: mindspore==2.10.0 "numpy<2" and the CUDA 11 pip packages, then, as a user would, CUDA_HOME
# and LD_LIBRARY_PATH; reports what MindSpore's GPU plugin does (1) with CUDA_HOME at nvidia-cuda-nvcc-cu11,
# (2) after `source scripts/cuda_pip_env.sh`, (3) where no driver is installed, with a no-device stand-in for
# libcuda.so.1 (built with gcc from the driver symbols the plugin imports): every other library then resolves.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-/tmp/dropcov-cuda11-pip}"
PYTHON="${PYTHON:-python3}"
VENV="$WORK/venv"
MINDSPORE=(mindspore==2.10.0 "numpy<2")
CUDA_PACKAGES=(nvidia-cuda-runtime-cu11 nvidia-cublas-cu11 nvidia-cufft-cu11 nvidia-curand-cu11 nvidia-cusolver-cu11
               nvidia-cusparse-cu11 "nvidia-cudnn-cu11<9" nvidia-cuda-nvrtc-cu11 nvidia-cuda-nvcc-cu11)
mkdir -p "$WORK/logs"
step() { echo; echo "== $*"; }
seconds() { local start=$SECONDS; "$@" >>"$WORK/logs/pip.log" 2>&1; echo $((SECONDS - start)); }
size_of() { du -sh --apparent-size "$1" | cut -f1; }

step "install (pip log: $WORK/logs/pip.log)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
t_ms=$(seconds "${PIP[@]}" download -d "$WORK/wheels/mindspore" "${MINDSPORE[@]}")
t_cuda=$(seconds "${PIP[@]}" download -d "$WORK/wheels/cuda" "${CUDA_PACKAGES[@]}")
t_install=$(seconds "${PIP[@]}" install --no-index --find-links "$WORK/wheels/mindspore" \
  --find-links "$WORK/wheels/cuda" "${MINDSPORE[@]}" "${CUDA_PACKAGES[@]}")
echo "download: mindspore + numpy and their dependencies $(size_of "$WORK/wheels/mindspore") in ${t_ms} s;" \
  "CUDA 11 packages $(size_of "$WORK/wheels/cuda") in ${t_cuda} s; install ${t_install} s"
ls -l "$WORK/wheels/cuda" | awk 'NR > 1 {printf "  %7.1f MB  %s\n", $5 / 1e6, $9}'
NVIDIA_DIR="$("$VENV/bin/python" -c 'import nvidia; print(list(nvidia.__path__)[0])')"
echo "installed: $(du -sh "$NVIDIA_DIR" | cut -f1) in $NVIDIA_DIR"

# MindSpore picks and opens its GPU plugin at import; print its verdict and, with a plugin, the device query.
probe() {
  GLOG_v=2 "$VENV/bin/python" - <<'PY' 2>"$WORK/logs/probe_stderr.log"
import time
started = time.time()
import mindspore as ms
from mindspore._c_expression import MSContext

context = MSContext.get_instance()
print(f"  import mindspore: {time.time() - started:.1f} s")
for line in context.load_plugin_error().splitlines():
    if "libmindspore_gpu" in line:
        print(f"  MindSpore's plugin load error: {line.strip()}")
loaded = context.is_pkg_support_device("GPU")
print(f"  GPU plugin loaded: {loaded}")
if loaded:
    try:
        print(f"  GPUs: {ms.hal.device_count('GPU')}")
    except RuntimeError as err:
        print("  device query: " + next(l for l in str(err).splitlines() if l.strip() and not l.startswith("-")))
PY
  grep -h -o "SelectGpuPlugin\].*\|GetNvccRealPath\].*\|LoadPlugin\] Please set env CUDA_HOME.*" \
    "$WORK/logs/probe_stderr.log" | sed -e 's/, reason: .*/, reason: (the load error above)/' -e 's/^/  MindSpore log: /' \
    || true
}

step "1. CUDA_HOME=$NVIDIA_DIR/cuda_nvcc (the nvidia-cuda-nvcc-cu11 package), libraries on LD_LIBRARY_PATH"
echo "  its bin/: $(ls "$NVIDIA_DIR/cuda_nvcc/bin" | tr '\n' ' ')"
(
  export CUDA_HOME="$NVIDIA_DIR/cuda_nvcc"
  LD_LIBRARY_PATH="$(printf '%s:' "$NVIDIA_DIR"/*/lib)${LD_LIBRARY_PATH:-}"
  export LD_LIBRARY_PATH
  probe
)

step "2. source scripts/cuda_pip_env.sh"
(
  unset CUDA_HOME
  PYTHON="$VENV/bin/python" DROPCOV_CUDA_HOME="$WORK/cuda-version-home" source "$REPO_ROOT/scripts/cuda_pip_env.sh"
  probe
  step "   check_env --gpu (with that environment)"
  (cd "$REPO_ROOT" && "$VENV/bin/python" scripts/check_env.py --gpu 2>"$WORK/logs/check_env_stderr.log") \
    | grep -v "^OK" | sed 's/^/  /' || true
  if ! "$VENV/bin/python" -c 'import ctypes; ctypes.CDLL("libcuda.so.1")' 2>/dev/null; then
    step "3. no NVIDIA driver here: a no-device stand-in for libcuda.so.1"
    command -v gcc >/dev/null && command -v nm >/dev/null || { echo "  needs gcc and nm (binutils)"; exit 0; }
    plugin_dir="$("$VENV/bin/python" -c 'import importlib.util as u; print(u.find_spec("mindspore").submodule_search_locations[0])')/lib/plugin"
    stand_in="$WORK/no-device-driver"
    mkdir -p "$stand_in"
    symbols="$(nm -D --undefined-only "$plugin_dir"/libmindspore_gpu.so.* "$plugin_dir"/gpu/*.so* \
      | awk '{print $NF}' | sed 's/@.*//' | grep -E '^cu[A-Z]' | sort -u)"
    { echo "/* every driver entry point returns CUDA_ERROR_NO_DEVICE (100) */"
      for name in $symbols cuInit cuDriverGetVersion cuGetProcAddress cuDeviceGetCount; do
        echo "int $name(void) { return 100; }"
      done; } | sort -u >"$stand_in/libcuda.c"
    gcc -shared -fPIC -o "$stand_in/libcuda.so.1" -Wl,-soname,libcuda.so.1 "$stand_in/libcuda.c"
    echo "  driver symbols the plugin imports: $(echo $symbols)"
    export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$stand_in"
    probe
  fi
)
echo
echo "logs: $WORK/logs (pip.log, probe_stderr.log of the last probe)"
