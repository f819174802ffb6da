"""The oneDNN kernels' two memory layouts, the measured choice between them, and their thread pool."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from mindspore import Tensor, nn
from onednn_helpers import GradOfProbe, numpy_conv2d

from src.kernels import build
from src.kernels.onednn_conv import OneDNNConv2d

LAYOUT_VARIABLE = "DROPCOV_ONEDNN_LAYOUT"


def _has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return " avx512f" in cpuinfo.read()
    except OSError:
        return False


@pytest.fixture(scope="module")
def library() -> str:
    return str(build.build_library())


GEOMETRIES = {  # (in, out, kernel, stride, padding, input size)
    "1x1 stride 1": (16, 24, 1, 1, 0, 9),
    "1x1 stride 2": (8, 16, 1, 2, 0, 10),
    "3x3 stride 1 pad 1": (8, 8, 3, 1, 1, 9),
    "3x3 stride 2 pad 1": (6, 16, 3, 2, 1, 11),
}


@pytest.mark.parametrize("layout", ["blocked", "plain"])
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_each_layout_matches_numpy_and_the_stock_gradients(name, layout, library, monkeypatch):
    """A forced layout (DROPCOV_ONEDNN_LAYOUT) is read at each shape's first use, so both run in one process."""
    monkeypatch.setenv(LAYOUT_VARIABLE, layout)
    cin, cout, kernel, stride, padding, size = GEOMETRIES[name]
    stock = nn.Conv2d(cin, cout, kernel, stride=stride, pad_mode="pad", padding=padding, has_bias=False)
    rng = np.random.default_rng(11)
    stock.weight.set_data(Tensor(rng.standard_normal(stock.weight.shape).astype(np.float32)))
    fast = OneDNNConv2d(stock, library)
    x = rng.standard_normal((3, cin, size, size)).astype(np.float32)
    y = fast(Tensor(x)).asnumpy()
    np.testing.assert_allclose(y, numpy_conv2d(x, stock.weight.asnumpy(), stride, pads=(padding,) * 4),
                               rtol=1e-4, atol=1e-4)
    probe = Tensor(rng.standard_normal(y.shape).astype(np.float32))
    (dx_fast, _), (dw_fast,) = GradOfProbe(fast)(Tensor(x), probe)
    (dx_stock, _), (dw_stock,) = GradOfProbe(stock)(Tensor(x), probe)
    np.testing.assert_allclose(dx_fast.asnumpy(), dx_stock.asnumpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw_fast.asnumpy(), dw_stock.asnumpy(), rtol=1e-4, atol=1e-3)


# A fresh process: runs forward + backward of a 1x1 and a 3x3 convolution (a training step's three kernels
# each), then one forward alone, and prints a checksum of the results and the names of the process's
# threads before and after that forward.
SCRIPT = """
import json, os, sys
import numpy as np, mindspore as ms
from mindspore import Tensor, nn
sys.path.insert(0, os.getcwd())
from src.kernels.build import build_library
from src.kernels.onednn_conv import OneDNNConv2d
ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
library = str(build_library())
class Total(nn.Cell):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv
    def construct(self, x):
        return self.conv(x).sum()
rng = np.random.default_rng(0)
sums = []
for cin, cout, k in ((32, 64, 1), (16, 16, 3)):
    conv = nn.Conv2d(cin, cout, k, pad_mode="pad", padding=k // 2, has_bias=False)
    conv.weight.set_data(Tensor(rng.standard_normal(conv.weight.shape).astype(np.float32)))
    fast = OneDNNConv2d(conv, library)
    x = Tensor(rng.standard_normal((4, cin, 12, 12)).astype(np.float32))
    value, (dx, (dw,)) = ms.value_and_grad(Total(fast), grad_position=0, weights=[fast.weight])(x)
    sums += [float(value.asnumpy()), float(dx.asnumpy().astype(np.float64).sum()),
             float(dw.asnumpy().astype(np.float64).sum())]
def thread_names():
    return [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
threads = thread_names()
# a forward whose kernels are called from a thread outside MindSpore's pool: PyNative mode launches them
# from its queue thread (a graph that MindSpore runs on the calling thread, as it may an evaluation
# forward, calls them from the Python thread)
ms.set_context(mode=ms.PYNATIVE_MODE)
big = Tensor(rng.standard_normal((8, 16, 56, 56)).astype(np.float32))  # large enough for oneDNN to split
sums.append(float(fast(big).asnumpy().astype(np.float64).sum()))
print("RESULT " + json.dumps({"sums": sums, "threads": threads, "threads_after_forward": thread_names()}))
"""


def _run(folder, **env) -> dict:
    """SCRIPT's result in a fresh process whose library (a copy of the built one) lives in ``folder``."""
    built = build.build_library()
    if not (folder / built.name).exists():
        shutil.copy2(built, folder / built.name)  # up to date there: the process does not compile again
    environment = {key: value for key, value in os.environ.items() if key not in (LAYOUT_VARIABLE,
                                                                                  "DROPCOV_ONEDNN_THREADPOOL")}
    environment.update(DROPCOV_KERNEL_DIR=str(folder), GLOG_v="3")
    for key, value in env.items():  # None removes the variable
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    script = folder / "probe.py"  # MindSpore compiles from source files only
    script.write_text(SCRIPT)
    result = subprocess.run([sys.executable, str(script)], cwd=build.REPO_ROOT, env=environment,
                            capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _choices(folder) -> list[list[str]]:
    files = list(folder.glob("libdropcov_onednn-*.layouts-*.tsv"))
    assert len(files) <= 1
    if not files:
        return []
    return [line.split("\t") for line in files[0].read_text().splitlines()]


@pytest.mark.slow
def test_measured_layouts_are_written_once_and_reused(tmp_path):
    """At AVX2 both layouts are candidates: the first process measures each (direction, shape) and writes
    its choice next to the library; the next one reads it back, measures nothing, and gets the same numbers."""
    first = _run(tmp_path, ONEDNN_MAX_CPU_ISA="AVX2")
    lines = _choices(tmp_path)
    header, rows = [row for row in lines if row[0].startswith("#")], [row for row in lines if not row[0].startswith("#")]
    assert "oneDNN ISA AVX2" in header[0][0] and "threads" in header[0][0]
    # two convolutions' three directions, and the last forward's larger input
    assert sorted(row[0].split(",")[0] for row in rows) == sorted(["fwd", "bwd_data", "bwd_filter"] * 2 + ["fwd"])
    for key, layout, blocked_ms, plain_ms in rows:
        assert layout in ("blocked", "plain")
        assert float(blocked_ms) > 0 and float(plain_ms) > 0
        assert layout == ("plain" if float(plain_ms) < float(blocked_ms) else "blocked"), key
    again = _run(tmp_path, ONEDNN_MAX_CPU_ISA="AVX2")
    assert _choices(tmp_path) == lines
    assert again["sums"] == first["sums"]


@pytest.mark.slow
@pytest.mark.skipif(not _has_avx512(), reason="needs an AVX-512 CPU")
def test_reference_kernels_are_never_candidates(tmp_path):
    """At AVX-512 oneDNN would run the plain-layout 3x3 forward and backward-data convolutions on its
    reference kernel (~50x slower): they run blocked without being measured; the 1x1 ones are measured."""
    _run(tmp_path, ONEDNN_MAX_CPU_ISA=None)
    measured = [row[0] for row in _choices(tmp_path) if not row[0].startswith("#")]
    three_by_three = [key for key in measured if ",16,16,3,3," in key]  # weight (16, 16, 3, 3)
    assert not [key for key in three_by_three if key.startswith(("fwd,", "bwd_data,"))]
    assert any(key.startswith("fwd,") and ",64,32,1,1," in key for key in measured)


@pytest.mark.slow
def test_forced_layouts_and_both_thread_pools_agree(tmp_path):
    """A forced layout measures nothing. By default a kernel called from a thread outside MindSpore's pool
    (the PyNative forward) starts our pool (threads named dropcov-onednn: the caller and one worker), as
    DROPCOV_ONEDNN_THREADPOOL=own does for all; kernels called from MindSpore's pool threads run on that
    pool. All agree."""
    blocked = _run(tmp_path, ONEDNN_MAX_CPU_ISA="AVX2", **{LAYOUT_VARIABLE: "blocked"})
    plain = _run(tmp_path, ONEDNN_MAX_CPU_ISA="AVX2", **{LAYOUT_VARIABLE: "plain"})
    own = _run(tmp_path, ONEDNN_MAX_CPU_ISA="AVX2", DROPCOV_ONEDNN_THREADPOOL="own", DROPCOV_ONEDNN_THREADS="2",
               **{LAYOUT_VARIABLE: "blocked"})
    assert _choices(tmp_path) == []
    assert blocked["threads_after_forward"].count("dropcov-onednn") == 1
    assert own["threads"].count("dropcov-onednn") == 1  # 2 threads: the caller and one worker
    np.testing.assert_allclose(plain["sums"], blocked["sums"], rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(own["sums"], blocked["sums"], rtol=1e-5, atol=1e-3)
