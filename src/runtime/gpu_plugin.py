"""Which GPU plugin MindSpore loads, what it needs, and why it did not load: read from the installed wheel.

At ``import mindspore``, MindSpore 2.10 looks for ``lib/plugin/libmindspore_gpu.so.X.Y`` (one per CUDA
version the wheel was built for: 11.1 and 11.6) and picks one by ``$CUDA_HOME/bin/nvcc --version``:

- ``CUDA_HOME`` unset: no GPU plugin is tried (said only in an INFO log line);
- no ``$CUDA_HOME/bin/nvcc``: none either;
- CUDA X.Y: the plugin of exactly X.Y, else the newest plugin of the same major version below X.Y
  (11.8 -> 11.6, 11.4 -> 11.1); none for 11.0, 12.x or 13.x;
- the chosen plugin is then opened with ``dlopen``; the loader's complaint (the first missing library
  only) is kept in ``MSContext.load_plugin_error()``.

Which toolkits a plugin really runs on follows from the NVRTC it needs (``DT_NEEDED``): CUDA 11.0 and 11.1 each
ship their own ``libnvrtc.so.11.0`` / ``libnvrtc.so.11.1``, CUDA 11.2 to 11.8 all ship ``libnvrtc.so.11.2``.
The 11.1 plugin needs ``libnvrtc.so.11.1``: it runs on CUDA 11.1 only, so for CUDA 11.2 to 11.5, where MindSpore
picks it, no plugin of the wheel loads. The 11.6 plugin needs ``libnvrtc.so.11.2`` and serves 11.6 to 11.8.

:func:`choose_gpu_plugin` restates that rule (the tests hold it against MindSpore's own choice), so that a
check can tell which plugin a machine gets and list every library the plugin needs, not only the first
one missing.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from src.runtime.elf import find_library, read_dynamic_section

GPU_PLUGIN_PREFIX = "libmindspore_gpu.so."
_NVCC_RELEASE = re.compile(r"Cuda compilation tools, release (\d+)\.(\d+),")
CUDA_HOME_FIX = ("point CUDA_HOME to a CUDA 11.x toolkit (11.8 for Ada/Hopper GPUs), e.g. export "
                 "CUDA_HOME=/usr/local/cuda-11.8; with the CUDA 11 pip packages: source scripts/cuda_pip_env.sh "
                 "(docs/GPU.md)")

#: What each outside library of the GPU plugin is and how to get it (the list of needed libraries itself
#: is read from the plugin file). The driver's libcuda comes with the NVIDIA driver, never from pip.
LIBRARY_SOURCES = {
    "libcuda": ("NVIDIA driver", "install the NVIDIA driver (>= 520 for CUDA 11.8; check with nvidia-smi)"),
    "libcudart": ("CUDA runtime", "pip install nvidia-cuda-runtime-cu11"),
    "libcublas": ("cuBLAS", "pip install nvidia-cublas-cu11"),
    "libcublasLt": ("cuBLASLt", "pip install nvidia-cublas-cu11"),
    "libcufft": ("cuFFT", "pip install nvidia-cufft-cu11"),
    "libcurand": ("cuRAND", "pip install nvidia-curand-cu11"),
    "libcusolver": ("cuSOLVER", "pip install nvidia-cusolver-cu11"),
    "libcusparse": ("cuSPARSE", "pip install nvidia-cusparse-cu11"),
    "libcudnn": ("cuDNN 8", "pip install 'nvidia-cudnn-cu11<9'"),
    "libnvrtc": ("NVRTC", "pip install nvidia-cuda-nvrtc-cu11"),
    "libmpi": ("OpenMPI 4.x", "apt-get install libopenmpi-dev openmpi-bin (OpenMPI 4.x: libmpi.so.40)"),
}


def mindspore_dir() -> Path | None:
    """The installed ``mindspore`` package folder, found without importing it."""
    spec = importlib.util.find_spec("mindspore")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def plugin_dir() -> Path | None:
    """``mindspore/lib/plugin`` of the installed wheel."""
    root = mindspore_dir()
    return root / "lib" / "plugin" if root is not None else None


def gpu_plugins(folder: Path | None = None) -> dict[tuple[int, int], Path]:
    """The wheel's GPU plugins by CUDA version: ``{(11, 1): .../libmindspore_gpu.so.11.1, ...}``."""
    folder = folder or plugin_dir()
    found = {}
    for path in (folder.glob(GPU_PLUGIN_PREFIX + "*") if folder is not None and folder.is_dir() else ()):
        match = re.fullmatch(r"(\d+)\.(\d+)", path.name[len(GPU_PLUGIN_PREFIX):])
        if match:
            found[(int(match[1]), int(match[2]))] = path
    return dict(sorted(found.items()))


def select_plugin_version(cuda: tuple[int, int], versions) -> tuple[int, int] | None:
    """MindSpore's choice for toolkit ``cuda``: the same version, else the newest of the same major below it."""
    versions = sorted(versions)
    if cuda in versions:
        return cuda
    below = [v for v in versions if v[0] == cuda[0] and v < cuda]
    return below[-1] if below else None


def nvcc_release(nvcc: Path) -> tuple[int, int] | None:
    """``(major, minor)`` from ``nvcc --version`` ("Cuda compilation tools, release 11.8, ..."), or None."""
    try:
        out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _NVCC_RELEASE.search(out)
    return (int(match[1]), int(match[2])) if match else None


def pip_cuda_root() -> Path | None:
    """``site-packages/nvidia`` of the ``nvidia-*-cu11`` pip packages of this Python, if any."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@dataclass
class PluginChoice:
    """The GPU plugin MindSpore takes for ``cuda_home`` (None, with ``problem`` and ``fix`` saying why)."""

    cuda_home: str
    cuda_version: tuple[int, int] | None
    plugin: Path | None
    problem: str = ""
    fix: str = ""


#: The fix for an NVRTC that no pip package provides (the CUDA 11 pip packages are CUDA 11.8 builds).
_OWN_NVRTC_FIX = ("use a CUDA 11.6-11.8 toolkit, for which MindSpore picks its 11.6 plugin (the pip route: "
                  "source scripts/cuda_pip_env.sh, docs/GPU.md)")
_NVRTC_SONAME = re.compile(r"libnvrtc\.so\.(\d+)\.(\d+)")


def plugin_nvrtc(plugin: Path) -> tuple[int, int] | None:
    """The NVRTC release whose ``libnvrtc.so.X.Y`` ``plugin`` needs (None: it needs none)."""
    for name in read_dynamic_section(plugin).needed:
        match = _NVRTC_SONAME.fullmatch(name)
        if match:
            return int(match[1]), int(match[2])
    return None


def own_nvrtc_toolkit(nvrtc: tuple[int, int] | None) -> tuple[int, int] | None:
    """The one CUDA release that ships NVRTC ``nvrtc`` when only that release does (11.0, 11.1), else None."""
    return nvrtc if nvrtc is not None and nvrtc[0] == 11 and nvrtc < (11, 2) else None


def choose_gpu_plugin(cuda_home: str | None = None, folder: Path | None = None) -> PluginChoice:
    """The plugin MindSpore's rule picks for ``cuda_home`` (default: ``$CUDA_HOME``)."""
    cuda_home = os.environ.get("CUDA_HOME", "") if cuda_home is None else cuda_home
    plugins = gpu_plugins(folder)
    built_for = " and ".join(f"{major}.{minor}" for major, minor in plugins) or "no CUDA version"
    if not plugins:
        return PluginChoice(cuda_home, None, None, f"this MindSpore wheel has no GPU plugin ({folder or plugin_dir()})",
                            "pip install mindspore==2.10.0 (the unified wheel carries the CUDA 11 plugins)")
    if not cuda_home:
        return PluginChoice(cuda_home, None, None,
                            "CUDA_HOME is not set, and MindSpore loads its GPU plugin only when $CUDA_HOME/bin/nvcc "
                            f"reports a CUDA 11 toolkit (its plugins are built for CUDA {built_for})",
                            CUDA_HOME_FIX)
    nvcc = Path(cuda_home) / "bin" / "nvcc"
    if not nvcc.is_file():
        return PluginChoice(cuda_home, None, None,
                            f"CUDA_HOME={cuda_home} has no bin/nvcc, whose version picks MindSpore's GPU plugin",
                            CUDA_HOME_FIX)
    version = nvcc_release(nvcc)
    if version is None:
        return PluginChoice(cuda_home, None, None,
                            f"{nvcc} --version does not print 'Cuda compilation tools, release X.Y,'",
                            CUDA_HOME_FIX)
    chosen = select_plugin_version(version, plugins)
    if chosen is None:
        return PluginChoice(cuda_home, version, None,
                            f"CUDA_HOME={cuda_home} holds CUDA {version[0]}.{version[1]}, but MindSpore's GPU plugins "
                            f"are built for CUDA {built_for} only",
                            CUDA_HOME_FIX)
    own = own_nvrtc_toolkit(plugin_nvrtc(plugins[chosen]))
    if own is not None and version != own:
        release = f"{version[0]}.{version[1]}"
        return PluginChoice(cuda_home, version, plugins[chosen],
                            f"CUDA_HOME={cuda_home} holds CUDA {release}: MindSpore picks {plugins[chosen].name}, "
                            f"which needs libnvrtc.so.{own[0]}.{own[1]}, shipped by CUDA {own[0]}.{own[1]} only (CUDA "
                            f"11.2 and later ship libnvrtc.so.11.2): no GPU plugin of this wheel runs on CUDA {release}",
                            _OWN_NVRTC_FIX)
    return PluginChoice(cuda_home, version, plugins[chosen])


@dataclass
class NeededLibrary:
    """One outside library a plugin needs: where the loader finds it (None: not found) and how to get it."""

    name: str
    label: str
    path: Path | None
    fix: str


def library_label(name: str) -> tuple[str, str]:
    """``(what it is, how to install it)`` for a library file name such as ``libcublas.so.11``."""
    label, fix = LIBRARY_SOURCES.get(name.split(".so")[0], (name, f"install the package that provides {name}"))
    match = _NVRTC_SONAME.fullmatch(name)
    own = own_nvrtc_toolkit((int(match[1]), int(match[2])) if match else None)
    if own is not None:  # no pip package has it: the pip NVRTC (CUDA 11.8) is libnvrtc.so.11.2
        fix = f"{name} comes with the CUDA {own[0]}.{own[1]} toolkit only; or {_OWN_NVRTC_FIX}"
    return label, fix


def outside_libraries(library: Path) -> list[NeededLibrary]:
    """The libraries ``library`` needs (DT_NEEDED, file order) that neither the wheel nor the C/C++ runtime
    provides, each with where the loader finds it now; a library found in a pip ``nvidia`` package that is
    not on the loader's path gets the ``LD_LIBRARY_PATH`` line as its fix."""
    dynamic = read_dynamic_section(library)
    wheel = mindspore_dir()
    pip_root = pip_cuda_root()
    result = []
    for name in dynamic.needed:
        path = find_library(name, dynamic)
        known = name.split(".so")[0] in LIBRARY_SOURCES
        if path is not None and not known:
            continue  # bundled in the wheel, or the system's C/C++ runtime
        if path is not None and wheel is not None and wheel in path.resolve().parents:
            continue
        label, fix = library_label(name)
        if path is None and pip_root is not None:
            in_pip = sorted(pip_root.glob(f"*/lib/{name}"))
            if in_pip:
                fix = f"export LD_LIBRARY_PATH={in_pip[0].parent}:$LD_LIBRARY_PATH (or source scripts/cuda_pip_env.sh)"
        result.append(NeededLibrary(name, label, path, fix))
    return result


def mindspore_plugin_errors() -> list[str]:
    """MindSpore's own record of the plugins it failed to open at import (``MSContext.load_plugin_error``)."""
    from mindspore._c_expression import MSContext

    return [line.strip() for line in MSContext.get_instance().load_plugin_error().splitlines() if line.strip()]


def gpu_unavailable_reason() -> str:
    """Why MindSpore has no GPU plugin in this process: its own load error for the plugin it chose, else why
    its rule chose none. Empty when the plugin loaded."""
    failed = [line for line in mindspore_plugin_errors() if "libmindspore_gpu" in line]
    choice = choose_gpu_plugin()
    if failed:
        why = f"; {choice.problem}" if choice.plugin is not None and choice.problem else ""
        return f"MindSpore could not load its GPU plugin: {failed[-1]}{why}"
    return choice.problem
