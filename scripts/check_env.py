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

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
os.environ.setdefault("GLOG_v", "3")


@dataclass
class Check:
    name: str
    verdict: str  # OK, WARN, FAIL
    detail: str
    fix: str = ""


def _library(names: list[str]) -> str | None:
    """The first of ``names`` that the dynamic loader can open."""
    for name in names:
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return None


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


def check_devices(ms) -> list[Check]:
    checks = [Check("device CPU", "OK", "always available")]
    try:
        gpu = bool(ms.hal.is_available("GPU")) and ms.hal.device_count("GPU") > 0
        count = ms.hal.device_count("GPU") if gpu else 0
    except (RuntimeError, ValueError, AttributeError) as err:
        gpu, count = False, 0
        checks.append(Check("device GPU", "WARN", f"query failed: {err}"))
    if gpu:
        checks.append(Check("device GPU", "OK", f"{count} GPU(s) visible to MindSpore"))
    else:
        checks.append(Check("device GPU", "WARN", "MindSpore sees no GPU",
                            "for GPU runs install the NVIDIA driver and the CUDA 11.x / cuDNN 8 "
                            "libraries (README: Installation for GPU users); CPU runs are unaffected"))
    return checks


def check_cuda_libraries() -> list[Check]:
    wanted = {
        "CUDA runtime 11.x": (["libcudart.so.11.0", "libcudart.so.11"], "pip install nvidia-cuda-runtime-cu11 "
                              "or the CUDA 11.x toolkit, and put its lib64 on LD_LIBRARY_PATH"),
        "cuBLAS 11": (["libcublas.so.11"], "pip install nvidia-cublas-cu11, add its lib to LD_LIBRARY_PATH"),
        "cuDNN 8": (["libcudnn.so.8"], "pip install nvidia-cudnn-cu11, add its lib to LD_LIBRARY_PATH"),
        "NCCL 2": (["libnccl.so.2"], "pip install nvidia-nccl-cu11 (multi-GPU only)"),
    }
    checks = []
    for name, (libs, fix) in wanted.items():
        found = _library(libs)
        checks.append(Check(name, "OK" if found else "WARN", found or "not found by the loader",
                            "" if found else fix))
    return checks


def check_launchers() -> list[Check]:
    checks = []
    mpirun = _command_version(["mpirun", "--version"])
    checks.append(Check("mpirun (GPU data parallel)", "OK" if mpirun else "WARN", mpirun or "not on PATH",
                        "" if mpirun else "apt-get install openmpi-bin libopenmpi-dev (OpenMPI 4.x)"))
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
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)
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

    checks = [check_python(), check_numpy()]
    ms_check, ms = check_mindspore()
    checks.append(ms_check)
    if ms is not None:
        checks += check_devices(ms)
    checks += check_cuda_libraries() + check_launchers() + [check_cpu_isa(), check_cpu_kernels()]

    gpu_items = {"device GPU", "CUDA runtime 11.x", "cuBLAS 11", "cuDNN 8", "NCCL 2", "mpirun (GPU data parallel)"}
    failed = False
    width = max(len(c.name) for c in checks)
    for c in checks:
        verdict = "FAIL" if (args.gpu and c.name in gpu_items and c.verdict == "WARN") else c.verdict
        failed |= verdict == "FAIL"
        print(f"{verdict:4}  {c.name:<{width}}  {c.detail}")
        if c.fix and verdict != "OK":
            print(f"      {'':<{width}}  fix: {c.fix}")
    print("\nverdict:", "NOT READY" if failed else ("ready for GPU runs" if args.gpu else "ready for CPU runs"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
