"""Check that this machine can run dropcov-mindspore, with a verdict and a fix for each item.

    python scripts/check_env.py [--gpu]

Exit status 1 when an item needed for the requested use fails (``--gpu``: the GPU/NCCL items count).
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
os.environ.setdefault("GLOG_v", "3")


@dataclass
class Check:
    name: str
    verdict: str  # OK, WARN, FAIL
    detail: str
    fix: str = ""
    gpu: bool = False  # needed for GPU runs: a WARN becomes FAIL under --gpu


def _command_version(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else command[0]


def check_python() -> Check:
    version = sys.version.split()[0]
    ok = (3, 9) <= sys.version_info[:2] <= (3, 11)
    return Check("Python", "OK" if ok else "FAIL", version,
                 "" if ok else "use Python 3.9-3.11 (MindSpore 2.10 wheels)")


def check_numpy() -> Check:
    try:
        import numpy
    except ImportError:
        return Check("NumPy", "FAIL", "not installed", "pip install -r requirements.txt")
    major = int(numpy.__version__.split(".")[0])
    if major >= 2:
        return Check("NumPy", "FAIL", numpy.__version__,
                     "MindSpore 2.10 is built against NumPy 1.x: pip install 'numpy<2'")
    return Check("NumPy", "OK", numpy.__version__)


def check_mindspore() -> tuple[Check, object | None]:
    try:
        import mindspore
    except ImportError as err:
        return Check("MindSpore", "FAIL", f"import failed: {err}",
                     "pip install -r requirements.txt (the unified mindspore wheel)"), None
    return Check("MindSpore", "OK", mindspore.__version__), mindspore


def check_devices() -> list[Check]:
    """MindSpore's own verdict on the GPU, with its plugin-load reason when it has none."""
    from src.runtime.device import unavailable_reason

    checks = [Check("device CPU", "OK", "always available")]
    reason = unavailable_reason("GPU")
    if reason:
        checks.append(Check("device GPU", "WARN", f"MindSpore sees no usable GPU: {reason}",
                            "the GPU items below name what is missing (docs/GPU.md); CPU runs are unaffected", gpu=True))
    else:
        import mindspore as ms

        checks.append(Check("device GPU", "OK", f"{ms.hal.device_count('GPU')} GPU(s) visible to MindSpore", gpu=True))
    return checks


def check_gpu_plugin() -> list[Check]:
    """MindSpore's plugin choice from $CUDA_HOME/bin/nvcc, then every outside library that plugin needs
    (read from the plugin file), the bundled NCCL and the MPI library behind mpirun collectives."""
    from src.runtime import gpu_plugin

    choice = gpu_plugin.choose_gpu_plugin()
    plugins = gpu_plugin.gpu_plugins()
    if choice.plugin is not None and choice.problem:  # picked, but it cannot load with this toolkit
        checks = [Check("GPU plugin (CUDA_HOME)", "WARN", choice.problem, choice.fix, gpu=True)]
        plugin = choice.plugin
    elif choice.plugin is not None:
        version = ".".join(map(str, choice.cuda_version))
        checks = [Check("GPU plugin (CUDA_HOME)", "OK", f"CUDA_HOME={choice.cuda_home}: nvcc reports CUDA {version}, "
                        f"MindSpore picks {choice.plugin.name}", gpu=True)]
        plugin = choice.plugin
    else:
        checks = [Check("GPU plugin (CUDA_HOME)", "WARN", choice.problem, choice.fix, gpu=True)]
        plugin = plugins[max(plugins)] if plugins else None  # the one a CUDA 11.8 toolkit gets
    if plugin is None:
        return checks
    suffix = "" if choice.plugin is not None else f" (for {plugin.name})"
    for lib in gpu_plugin.outside_libraries(plugin):
        checks.append(Check(f"{lib.label} {lib.name}{suffix}", "OK" if lib.path else "WARN",
                            str(lib.path) if lib.path else "not found by the loader", "" if lib.path else lib.fix,
                            gpu=True))
    nccl = plugin.parent / f"gpu{plugin.name[len(gpu_plugin.GPU_PLUGIN_PREFIX):]}" / "libnccl.so.2"
    checks.append(Check("NCCL (bundled)", "OK" if nccl.is_file() else "WARN",
                        f"{nccl} (MindSpore loads its own copy)" if nccl.is_file() else f"{nccl} missing",
                        "" if nccl.is_file() else "reinstall mindspore==2.10.0", gpu=True))
    collective = plugin.parent.parent / "libmpi_collective.so"
    if collective.is_file():
        for lib in gpu_plugin.outside_libraries(collective):
            checks.append(Check(f"{lib.label} {lib.name} (mpirun)", "OK" if lib.path else "WARN",
                                f"{lib.path or 'not found by the loader'} (needed by {collective.name})",
                                "" if lib.path else lib.fix, gpu=True))
    return checks


def _nvidia_smi() -> list[dict]:
    """One dict per GPU from nvidia-smi (name, compute_cap, driver_version), [] without nvidia-smi."""
    fields = ["name", "compute_cap", "driver_version"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [dict(zip(fields, (part.strip() for part in line.split(",")))) for line in out.stdout.splitlines()
            if line.count(",") == len(fields) - 1]


def _major_version(text: str) -> int:
    try:
        return int(text.split(".")[0])
    except ValueError:
        return 0


def _library_version(name: str) -> tuple[int, int, int] | None:
    """cuBLAS (cublasGetProperty) or cuDNN (cudnnGetVersion) version of the library the loader finds."""
    from src.runtime.elf import find_library

    path = find_library(name)
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(str(path))
        if name.startswith("libcudnn"):
            lib.cudnnGetVersion.restype = ctypes.c_size_t
            number = int(lib.cudnnGetVersion())
            return number // 1000, number % 1000 // 100, number % 100
        parts = []
        for prop in range(3):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
            value = ctypes.c_int()
            if lib.cublasGetProperty(prop, ctypes.byref(value)) != 0:
                return None
            parts.append(value.value)
        return tuple(parts)
    except (OSError, AttributeError):
        return None


def check_jit_cache(compute_capability: float) -> Check:
    """The CUDA JIT cache on GPUs newer than Pascal: the NCCL that MindSpore bundles holds machine code for sm_60
    only (and compute_60 PTX), so its kernels are JIT-compiled at the first collective of every such GPU, and on
    Hopper MindSpore's own kernels too. The cache folder must be writable and outlive the run; its size is
    MindSpore's to set (it exports CUDA_CACHE_MAXSIZE=4000000000 when its GPU plugin loads)."""
    folder = Path(os.environ.get("CUDA_CACHE_PATH") or Path.home() / ".nv" / "ComputeCache")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    writable = os.access(existing, os.W_OK)
    disabled = os.environ.get("CUDA_CACHE_DISABLE") == "1"
    detail = (f"{folder}{'' if os.environ.get('CUDA_CACHE_PATH') else ' (default; CUDA_CACHE_PATH unset)'}: "
              f"NCCL's kernels are JIT-compiled at the first collective on compute capability {compute_capability:g}"
              + (", MindSpore's own on Hopper" if compute_capability >= 9.0 else "") + ", then read from here")
    if disabled or not writable:
        problem = "CUDA_CACHE_DISABLE=1" if disabled else f"{existing} is not writable"
        return Check("CUDA JIT cache", "WARN", f"{problem}; {detail}",
                     "unset CUDA_CACHE_DISABLE and export CUDA_CACHE_PATH=<a writable folder that outlives the run> "
                     "(in a container: a volume)", gpu=True)
    return Check("CUDA JIT cache", "OK", detail, gpu=True)


def check_gpu_hardware() -> list[Check]:
    """Driver and GPUs from nvidia-smi; the CUDA JIT cache on every GPU newer than Pascal (NCCL's kernels are
    JIT-compiled there); for Ada/Hopper (compute capability >= 8.9) the CUDA 11.8 libraries."""
    gpus = _nvidia_smi()
    if not gpus:
        return [Check("NVIDIA driver", "WARN", "nvidia-smi not found or lists no GPU",
                      "install the NVIDIA driver (>= 520 for CUDA 11.8)", gpu=True)]
    driver = gpus[0]["driver_version"]
    listing = "; ".join(f"{g['name']} (compute capability {g['compute_cap']})" for g in gpus)
    checks = [Check("NVIDIA driver", "OK" if _major_version(driver) >= 520 else "WARN", f"{driver}; {listing}",
                    "" if _major_version(driver) >= 520 else
                    "CUDA 11.8 libraries (and Ada/Hopper GPUs) need driver >= 520", gpu=True)]
    try:
        newest = max(float(g["compute_cap"]) for g in gpus)
    except ValueError:
        return checks
    if newest >= 7.0:
        checks.append(check_jit_cache(newest))
    if newest < 8.9:
        return checks
    cuda = os.environ.get("CUDA_HOME", "")
    from src.runtime.gpu_plugin import choose_gpu_plugin

    toolkit = choose_gpu_plugin().cuda_version
    checks.append(Check("CUDA 11.8 for sm_89/sm_90", "OK" if toolkit and toolkit >= (11, 8) else "WARN",
                        f"CUDA_HOME={cuda or 'unset'} reports CUDA {'.'.join(map(str, toolkit)) if toolkit else '?'}",
                        "" if toolkit and toolkit >= (11, 8) else "use the CUDA 11.8 toolkit and libraries "
                        "(the first CUDA 11 with Ada/Hopper support)", gpu=True))
    for name, label, wanted, fix in (
            ("libcublas.so.11", "cuBLAS", (11, 11), "pip install 'nvidia-cublas-cu11>=11.11'"),
            ("libcudnn.so.8", "cuDNN", (8, 9), "pip install 'nvidia-cudnn-cu11>=8.9,<9'")):
        found = _library_version(name)
        good = found is not None and found[:2] >= wanted
        checks.append(Check(f"{label} >= {wanted[0]}.{wanted[1]} for sm_89/sm_90", "OK" if good else "WARN",
                            ".".join(map(str, found)) if found else f"{name} not loadable", "" if good else fix,
                            gpu=True))
    return checks


def check_launchers() -> list[Check]:
    checks = []
    mpirun = _command_version(["mpirun", "--version"])
    checks.append(Check("mpirun (GPU data parallel)", "OK" if mpirun else "WARN", mpirun or "not on PATH",
                        "" if mpirun else "apt-get install openmpi-bin libopenmpi-dev (OpenMPI 4.x)", gpu=True))
    beside = os.path.join(os.path.dirname(sys.executable), "msrun")
    msrun = shutil.which("msrun") or (beside if os.access(beside, os.X_OK) else None)
    checks.append(Check("msrun (any device)", "OK" if msrun else "WARN", msrun or "not on PATH",
                        "" if msrun else "comes with the mindspore wheel: activate its virtual environment"))
    try:
        from mpi4py import MPI

        checks.append(Check("mpi4py + MPI library", "OK", MPI.Get_library_version().splitlines()[0]))
    except ImportError as err:
        checks.append(Check("mpi4py + MPI library", "WARN", str(err).splitlines()[0],
                            "install OpenMPI (apt-get install libopenmpi-dev) for mpirun launches"))
    except RuntimeError as err:
        checks.append(Check("mpi4py + MPI library", "WARN", str(err).splitlines()[0],
                            "install OpenMPI (apt-get install libopenmpi-dev) for mpirun launches"))
    return checks


def check_cpu_isa() -> Check:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    avx512 = "avx512f" in flags
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    if avx512 and isa.upper() != "AVX2":
        return Check("oneDNN ISA", "WARN", f"AVX-512 CPU, ONEDNN_MAX_CPU_ISA={isa or 'unset'}",
                     "train.py/eval.py set ONEDNN_MAX_CPU_ISA=AVX2 for CPU runs on MindSpore's own "
                     "convolutions (conv_backend stock); keep it in your own scripts that use them "
                     "(3x3 convolutions are ~50x slower otherwise)")
    return Check("oneDNN ISA", "OK", f"{'AVX-512' if avx512 else 'no AVX-512'} CPU, "
                 f"ONEDNN_MAX_CPU_ISA={isa or 'unset'}")


def check_cpu_kernels() -> Check:
    """The oneDNN CPU kernels of ``csrc/`` (``conv_backend``): built, or why not (builds them if needed)."""
    from src.errors import DropCovError
    from src.kernels.build import build_library

    try:
        return Check("oneDNN CPU kernels", "OK", f"{build_library()} (conv_backend auto uses them on CPU)")
    except DropCovError as err:
        return Check("oneDNN CPU kernels", "WARN", f"not built: {err}",
                     "bash scripts/setup_env.sh (installs the headers and builds them); until then "
                     "conv_backend auto uses MindSpore's slower CPU convolutions")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="treat missing GPU/CUDA/NCCL/MPI items as failures")
    args = parser.parse_args(argv)
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)

    checks = [check_python(), check_numpy()]
    ms_check, ms = check_mindspore()
    checks.append(ms_check)
    if ms is not None:
        checks += check_devices() + check_gpu_plugin()
    checks += check_gpu_hardware() + check_launchers() + [check_cpu_isa(), check_cpu_kernels()]

    failed = False
    width = max(len(c.name) for c in checks)
    for c in checks:
        verdict = "FAIL" if (args.gpu and c.gpu and c.verdict == "WARN") else c.verdict
        failed |= verdict == "FAIL"
        print(f"{verdict:4}  {c.name:<{width}}  {c.detail}")
        if c.fix and verdict != "OK":
            print(f"      {'':<{width}}  fix: {c.fix}")
    print("\nverdict:", "NOT READY" if failed else ("ready for GPU runs" if args.gpu else "ready for CPU runs"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
