"""Description of the machine a benchmark ran on: CPU, ISA flags, cores, library versions, environment."""
from __future__ import annotations

import os
import platform
import re
import sys
import time
from importlib import metadata
from typing import Any

ISA_FLAG_PATTERN = re.compile(r"^(avx2|fma|avx512\w*|amx\w*|avx_vnni\w*)$")
ENV_PATTERN = re.compile(r"^(ONEDNN_|DNNL_|MKL_|OMP_|KMP_|OPENBLAS_|GOTO_|GLOG_|MS_|CUDA_VISIBLE)")
PACKAGES = ("mindspore", "numpy", "torch", "pillow", "scipy")


def cpu_busy_fraction(seconds: float = 1.0) -> float | None:
    """Fraction of the machine's CPU time spent busy over the next ``seconds`` (``/proc/stat``; None elsewhere).

    Taken while no benchmark worker runs (before the first, after the last), it is the share of the CPUs
    that other jobs used: unlike the load average, it does not count the benchmark's own work.
    """
    def totals() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as stat:
            values = [int(field) for field in stat.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    try:
        total_start, idle_start = totals()
        time.sleep(seconds)
        total_end, idle_end = totals()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total_end - total_start
    return round(1.0 - (idle_end - idle_start) / elapsed, 3) if elapsed > 0 else None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _cpuinfo() -> tuple[str, list[str]]:
    """CPU model name and the SIMD flags of interest from /proc/cpuinfo (Linux); else platform's guess."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = sorted(flag for flag in value.split() if ISA_FLAG_PATTERN.match(flag))
    except OSError:
        pass
    return model, flags


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def usable_cores() -> int:
    """CPUs this process may run on (affinity mask where available, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def describe_machine() -> dict[str, Any]:
    """CPU model, ISA flags (avx2/fma/avx512*/amx*), cores, memory, OS, Python and package versions,
    the thread/ISA/logging environment variables that change speed, the load average now, and the
    share of the CPUs busy with other jobs over one second (``cpu_busy``, :func:`cpu_busy_fraction`).

    Imports neither MindSpore nor PyTorch (versions come from the installed package metadata).
    """
    model, flags = _cpuinfo()
    return {
        "cpu_model": model,
        "isa_flags": flags,
        "logical_cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {package: _version(package) for package in PACKAGES},
        "environment": {key: value for key, value in sorted(os.environ.items()) if ENV_PATTERN.match(key)},
        "load_average": load_average(),
        "cpu_busy": cpu_busy_fraction(),
    }


def summary_line(machine: dict[str, Any]) -> str:
    """One line for tables and docs: model, cores, widest ISA, versions."""
    flags = machine.get("isa_flags") or []
    widest = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    versions = machine.get("versions", {})
    libs = ", ".join(f"{name} {version}" for name, version in versions.items()
                     if version and name in ("mindspore", "numpy", "torch"))
    return f"{machine.get('cpu_model')} ({machine.get('usable_cores')} cores, {widest}); {libs}"
