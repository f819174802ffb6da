"""The layering the README promises: packages import only downwards, and nothing loads MindSpore before
the entry points have settled the device environment (oneDNN's instruction set, MindSpore's log level)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each package may import (besides itself and src.errors), from the README's code-layout section.
ALLOWED = {
    "runtime": set(),
    "kernels": {"runtime", "models"},  # the kernels' twins replace a built network's cells
    "models": {"runtime"},
    "data": {"runtime"},
    "engine": {"models", "data", "runtime", "kernels"},
    "config": {"models", "data", "engine", "runtime", "kernels"},
    "tools": {"config", "models", "data", "engine", "runtime", "kernels", "cli"},
}


def imported_packages(path: Path) -> set[str]:
    """The ``src.<package>`` names a module imports, at any depth (module level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(ROOT / "src").parts[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: the module's own package unless it climbs out of it
                if node.level >= 2 and node.module:
                    found.add(node.module.split(".")[0])
                continue
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "src" and len(parts) > 1:
                found.add(parts[1])
    return found - {package, "errors"}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_downwards(package):
    for path in sorted((ROOT / "src" / package).glob("*.py")):
        upward = imported_packages(path) - ALLOWED[package]
        assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)}, above {package}"


@pytest.mark.parametrize("module", ["src.config", "src.models", "src.data", "src.kernels.backend",
                                    "src.runtime.context"])
def test_checking_a_config_loads_no_mindspore(module):
    """Config checks, the model registry and the backend decision run before ``import mindspore``."""
    code = (f"import sys; import {module}; from src.config import load_config; load_config([]); "
            "from src.models import list_models; list_models(); "
            "print('mindspore' in sys.modules)")
    if module == "src.runtime.context":  # it loads MindSpore when a run starts, not at import
        code = f"import sys; import {module}; print('mindspore' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"importing {module} loaded MindSpore"


def test_entry_points_import_neither_numpy_nor_mindspore():
    """run_entry_point blocks SIGINT/SIGTERM before main runs; threads started earlier (NumPy's BLAS pool,
    MindSpore's) would not inherit that and would hand Ctrl-C to MindSpore's handler, which turns it into
    SIGTERM. So importing an entry point must start no such library."""
    code = ("import sys; import train, eval, predict, export; "
            "print(sorted(m for m in ('numpy', 'mindspore') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
