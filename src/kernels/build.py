"""Compile ``csrc/onednn_kernels.cc`` into the shared library that :mod:`src.kernels.onednn_conv` loads.

The kernels link against the oneDNN inside the MindSpore wheel (``mindspore/lib/libdnnl.so.3``), so the
process has one oneDNN. Its headers come from PyPI's ``onednn-devel`` (headers only, installed with
``--no-deps`` by ``scripts/setup_env.sh``); their ``dnnl_config.h`` describes Intel's SYCL build, so the
build copies the headers and rewrites the runtime lines to MindSpore's threadpool runtime.

The library's file name carries a digest of the source, the flags and the oneDNN it links, so an edit or
a MindSpore upgrade rebuilds it, and concurrent builds (two ``msrun`` workers) cannot clash: each
compiles into a temporary file that is renamed into place.

    python -m src.kernels.build            # build (if needed) and print the library's path
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from src.errors import CommandLineParser, DropCovError

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = REPO_ROOT / "csrc" / "onednn_kernels.cc"
#: The headers ``SOURCE`` includes from its own folder (memory, pooling, elementwise passes, thread pools, layout
#: choices); in the digest too.
LOCAL_HEADERS = ("onednn_threadpool.h", "onednn_layout_choices.h", "onednn_memory.h", "onednn_pooling.h",
                 "elementwise_kernels.h")
#: Built libraries go here (ignored by git); ``DROPCOV_KERNEL_DIR`` overrides it.
BUILD_DIR = REPO_ROOT / "build" / "kernels"
#: The PyPI package with oneDNN's headers: 2025.3.0 is oneDNN 3.9, no newer than MindSpore 2.10's 3.10.
ONEDNN_DEVEL_REQUIREMENT = "onednn-devel==2025.3.0"
CXX_FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-pthread", "-fvisibility=hidden")
#: ``dnnl_config.h`` lines rewritten for MindSpore's oneDNN (threadpool CPU runtime, no GPU, no SYCL).
CONFIG_REWRITES = (
    (r"#define DNNL_CPU_THREADING_RUNTIME .*", "#define DNNL_CPU_THREADING_RUNTIME DNNL_RUNTIME_THREADPOOL"),
    (r"#define DNNL_CPU_RUNTIME .*", "#define DNNL_CPU_RUNTIME DNNL_RUNTIME_THREADPOOL"),
    (r"#define DNNL_GPU_RUNTIME .*", "#define DNNL_GPU_RUNTIME DNNL_RUNTIME_NONE"),
    (r"#define DNNL_WITH_SYCL\b.*", "/* DNNL_WITH_SYCL: not in MindSpore's oneDNN */"),
)


def mindspore_onednn_library() -> Path:
    """``libdnnl.so.3`` of the installed MindSpore wheel (found without importing MindSpore)."""
    spec = importlib.util.find_spec("mindspore")
    if spec is None or not spec.submodule_search_locations:
        raise DropCovError("MindSpore is not installed: run scripts/setup_env.sh")
    library = Path(list(spec.submodule_search_locations)[0]) / "lib" / "libdnnl.so.3"
    if not library.is_file():
        raise DropCovError(f"MindSpore's oneDNN library {library} is missing: this MindSpore build has no "
                           "oneDNN CPU backend; use conv_backend: stock")
    return library


def onednn_include_dir() -> Path:
    """The folder holding ``oneapi/dnnl/dnnl.hpp``: ``$DROPCOV_ONEDNN_INCLUDE``, else ``<venv>/include``."""
    candidates = [Path(os.environ["DROPCOV_ONEDNN_INCLUDE"])] if os.environ.get("DROPCOV_ONEDNN_INCLUDE") else []
    candidates += [Path(sys.prefix) / "include", Path(sys.base_prefix) / "include"]
    for folder in candidates:
        if (folder / "oneapi" / "dnnl" / "dnnl.hpp").is_file():
            return folder
    raise DropCovError("oneDNN headers not found (oneapi/dnnl/dnnl.hpp in "
                       f"{', '.join(str(c) for c in candidates)}): pip install --no-deps "
                       f"{ONEDNN_DEVEL_REQUIREMENT} (scripts/setup_env.sh does), or set DROPCOV_ONEDNN_INCLUDE")


def compiler() -> str:
    """The C++ compiler: ``$CXX``, else the first of g++ / c++ / clang++ on PATH."""
    for name in ([os.environ["CXX"]] if os.environ.get("CXX") else []) + ["g++", "c++", "clang++"]:
        if shutil.which(name):
            return name
    raise DropCovError("no C++ compiler found (tried $CXX, g++, c++, clang++): install g++ to build the "
                       "oneDNN convolution kernels, or use conv_backend: stock")


def build_dir() -> Path:
    """Where libraries are written: ``$DROPCOV_KERNEL_DIR``, else ``build/kernels`` in the repository."""
    return Path(os.environ.get("DROPCOV_KERNEL_DIR") or BUILD_DIR)


def library_path() -> Path:
    """The library for the current source, flags and MindSpore oneDNN (it may not be built yet)."""
    digest = hashlib.sha256()
    digest.update(SOURCE.read_bytes())
    for header in LOCAL_HEADERS:
        digest.update((SOURCE.parent / header).read_bytes())
    digest.update(" ".join(CXX_FLAGS).encode())
    library = mindspore_onednn_library()
    digest.update(f"{library.resolve()}:{library.stat().st_size}".encode())
    return build_dir() / f"libdropcov_onednn-{digest.hexdigest()[:12]}.so"


def _prepare_headers(include_dir: Path, destination: Path) -> None:
    """Copy oneDNN's headers to ``destination`` with ``dnnl_config.h`` rewritten for MindSpore's oneDNN."""
    shutil.copytree(include_dir / "oneapi", destination / "oneapi")
    config = destination / "oneapi" / "dnnl" / "dnnl_config.h"
    text = config.read_text()
    for pattern, replacement in CONFIG_REWRITES:
        text = re.sub(pattern, replacement, text)
    config.write_text(text)


def build_library(force: bool = False) -> Path:
    """Build the kernel library unless an up-to-date one exists; return its path.

    Raises:
        DropCovError: no compiler, no headers, or the compiler failed (its first error line is quoted).
    """
    target = library_path()
    if target.is_file() and not force:
        return target
    onednn = mindspore_onednn_library()
    include_dir, cxx = onednn_include_dir(), compiler()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch_folder = tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-")
    except OSError as err:
        raise DropCovError(f"cannot write the kernel library to {target.parent} ({err.strerror or err}): "
                           "set DROPCOV_KERNEL_DIR to a writable folder") from err
    with scratch_folder as scratch:
        scratch_dir = Path(scratch)
        _prepare_headers(include_dir, scratch_dir / "include")
        output = scratch_dir / target.name
        command = [cxx, *CXX_FLAGS, f"-I{scratch_dir / 'include'}", f"-I{SOURCE.parent}", str(SOURCE), "-o", str(output),
                   f"-L{onednn.parent}", "-l:libdnnl.so.3", f"-Wl,-rpath,{onednn.parent}"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if "error" in line] or result.stderr.splitlines()
            raise DropCovError(f"compiling {SOURCE.relative_to(REPO_ROOT)} failed ({cxx}): "
                               f"{errors[0].strip() if errors else 'exit status ' + str(result.returncode)}")
        os.replace(output, target)
    for stale in target.parent.glob("libdropcov_onednn-*"):
        if stale != target and not stale.name.startswith(f"{target.stem}."):
            stale.unlink(missing_ok=True)  # older libraries and their layout choices; a process keeps its mapping
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line: build the library (``--force`` rebuilds) and print its path; a build problem is one
    line on stderr and exit status 2 (``--debug`` shows the traceback)."""
    parser = CommandLineParser(description="Build the oneDNN convolution kernels (csrc/onednn_kernels.cc).")
    parser.add_argument("--force", action="store_true", help="rebuild even if an up-to-date library exists")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    try:
        args = parser.parse_args(argv)
        print(build_library(force=args.force))
    except DropCovError as error:
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            raise
        print(f"build_kernels: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
