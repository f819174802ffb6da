# Source this after installing the CUDA 11 pip packages (docs/GPU.md) into the active Python environment:
#   source scripts/cuda_pip_env.sh
# It puts every nvidia/*/lib folder of that Python on LD_LIBRARY_PATH and, unless CUDA_HOME already holds a
# bin/nvcc, points CUDA_HOME to a folder whose bin/nvcc only reports the pip packages' CUDA version:
# MindSpore 2.10 picks its GPU plugin from `$CUDA_HOME/bin/nvcc --version`, and the pip packages carry no
# nvcc (nvidia-cuda-nvcc-cu11 holds ptxas only). PYTHON (default python) selects the environment.
# Under mpirun, forward both variables with -x (scripts/common.sh does), and source this once on every node.

_dropcov_cuda_pip_env() {
  local python="${PYTHON:-python}" info nvidia_dir version prefix home
  info="$("$python" - <<'PY'
import importlib.metadata as md, importlib.util, sys
spec = importlib.util.find_spec("nvidia")
try:
    version = md.version("nvidia-cuda-runtime-cu11")
except md.PackageNotFoundError:
    version = ""
print(list(spec.submodule_search_locations)[0] if spec and spec.submodule_search_locations else "")
print(version)
print(sys.prefix)
PY
)" || { echo "cuda_pip_env: $python failed" >&2; return 1; }
  { read -r nvidia_dir; read -r version; read -r prefix; } <<<"$info"
  if [ -z "$nvidia_dir" ] || [ -z "$version" ]; then
    echo "cuda_pip_env: no CUDA 11 pip packages in $python's environment: pip install nvidia-cuda-runtime-cu11 ..." \
      "(docs/GPU.md)" >&2
    return 1
  fi
  local dir libs=""
  for dir in "$nvidia_dir"/*/lib; do
    case ":${LD_LIBRARY_PATH:-}:" in *":$dir:"*) ;; *) libs="$libs$dir:" ;; esac
  done
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:-}"
  LD_LIBRARY_PATH="${LD_LIBRARY_PATH%:}"
  if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then
    echo "cuda_pip_env: CUDA_HOME=$CUDA_HOME (kept: it has bin/nvcc); LD_LIBRARY_PATH has the pip CUDA $version libraries"
    return 0
  fi
  home="${DROPCOV_CUDA_HOME:-$prefix/cuda-version-home}"
  mkdir -p "$home/bin" 2>/dev/null || home="${XDG_CACHE_HOME:-$HOME/.cache}/dropcov/cuda-version-home"
  mkdir -p "$home/bin" || return 1
  local release="${version%.*}"
  cat > "$home/bin/nvcc" <<SH
#!/bin/sh
# Version-only stand-in for nvcc, written by dropcov-mindspore's scripts/cuda_pip_env.sh: MindSpore 2.10 picks
# its GPU plugin from \`\$CUDA_HOME/bin/nvcc --version\`, and the CUDA $release pip packages carry no nvcc.
case "\$1" in
  --version*|-V) echo "nvcc: NVIDIA (R) Cuda compiler driver"; echo "Cuda compilation tools, release $release, V$version"; exit 0 ;;
esac
echo "nvcc: this is a version-only stand-in (scripts/cuda_pip_env.sh); install the CUDA $release toolkit to compile CUDA code" >&2
exit 1
SH
  chmod +x "$home/bin/nvcc"
  export CUDA_HOME="$home"
  echo "cuda_pip_env: CUDA_HOME=$CUDA_HOME (reports CUDA $release); LD_LIBRARY_PATH has the pip CUDA libraries of $nvidia_dir"
}
_dropcov_cuda_pip_env
