"""Shared test set-up: CPU device, oneDNN capped at AVX2 before MindSpore is imported."""
import os
import sys
from pathlib import Path

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _mindspore_cpu_graph_mode():
    """Every test runs on the CPU in GRAPH_MODE unless it switches mode itself."""
    import mindspore as ms

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
