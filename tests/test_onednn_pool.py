"""The oneDNN max-pool kernels (csrc/onednn_kernels.cc, src/kernels/onednn_pool.py) against numpy and MindSpore."""
import os
import subprocess
import sys

import numpy as np
import pytest
from mindspore import Tensor, nn, ops
from numpy.lib.stride_tricks import sliding_window_view

from src.errors import DropCovError
from src.kernels import build
from src.kernels.onednn_pool import OneDNNMaxPool2d, can_replace_pool
from src.kernels.swap import apply_conv_backend, use_onednn_max_pools
from src.models import create_model


@pytest.fixture(scope="module")
def library() -> str:
    return str(build.build_library())


def numpy_max_pool(x, kernel, stride, padding):
    """Max pooling in numpy with -inf padding (padding never wins), floor output size."""
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
    windows = sliding_window_view(padded, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return windows.max(axis=(-2, -1))


class GradOfSum(nn.Cell):
    def __init__(self, pool):
        super().__init__()
        self.pool = pool
        self.grad = ops.GradOperation()

    def loss(self, x, probe):
        return (self.pool(x) * probe).sum()

    def construct(self, x, probe):
        return self.grad(self.loss)(x, probe)


@pytest.mark.parametrize("kernel,stride,padding,size", [(3, 2, 1, 16), (3, 2, 1, 15), (2, 2, 0, 9), (5, 1, 2, 7),
                                                         (3, 3, 1, 10)])
def test_max_pool_matches_numpy_and_its_gradient_matches_mindspore(kernel, stride, padding, size, library):
    stock = nn.MaxPool2d(kernel_size=kernel, stride=stride, pad_mode="pad", padding=padding)
    fast = OneDNNMaxPool2d(stock, library)
    rng = np.random.default_rng(kernel * 100 + size)
    x = rng.standard_normal((2, 3, size, size + 1)).astype(np.float32)  # continuous values: no ties
    y = fast(Tensor(x)).asnumpy()
    np.testing.assert_array_equal(y, numpy_max_pool(x, kernel, stride, padding))
    assert y.shape == stock(Tensor(x)).shape
    probe = Tensor(rng.standard_normal(y.shape).astype(np.float32))
    dx_fast = GradOfSum(fast)(Tensor(x), probe).asnumpy()
    dx_stock = GradOfSum(stock)(Tensor(x), probe).asnumpy()
    np.testing.assert_allclose(dx_fast, dx_stock, rtol=1e-6, atol=1e-6)
    # every output's gradient lands on exactly one input: the sums agree
    assert np.isclose(dx_fast.sum(), probe.asnumpy().sum(), rtol=1e-5)


def test_only_padded_max_pools_are_replaced(library):
    assert can_replace_pool(nn.MaxPool2d(3, 2, pad_mode="pad", padding=1))
    assert not can_replace_pool(nn.MaxPool2d(3, 2, pad_mode="same"))  # MindSpore's MaxPool op is fast
    assert not can_replace_pool(nn.MaxPool2d(3, 2, pad_mode="pad", padding=1, ceil_mode=True))
    assert not can_replace_pool(nn.AvgPool2d(3, 2))
    with pytest.raises(DropCovError, match="OneDNNMaxPool2d supports padded MaxPool2d"):
        OneDNNMaxPool2d(nn.MaxPool2d(3, 2, pad_mode="same"), library)


def test_resnet_stem_pool_is_swapped_and_gives_the_same_features(library):
    net = create_model("resnet18", num_classes=10)
    net.set_train(False)
    x = Tensor(np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32))
    expected = net.forward_features(x).asnumpy()
    assert use_onednn_max_pools(net, library) == 1
    assert isinstance(net.backbone.maxpool, OneDNNMaxPool2d)
    np.testing.assert_array_equal(net.forward_features(x).asnumpy(), expected)


def test_apply_conv_backend_swaps_pools_with_the_convolutions(library):
    net = create_model("resnet34", num_classes=10, head="gap")
    assert apply_conv_backend(net, "onednn", "CPU", "O0") == "onednn"
    kinds = [type(cell).__name__ for _, cell in net.cells_and_names()]
    assert kinds.count("OneDNNMaxPool2d") == 1 and "MaxPool2d" not in kinds
    assert kinds.count("OneDNNConv2d") == 36 and "Conv2d" not in kinds  # 33 backbone + 3 shortcuts


# A fresh process capped at AVX2 (oneDNN reads the cap at its first use): pools channel counts that the
# 8-channel blocking fits (16, 24) and one it would pad (5), checks each against numpy and MindSpore's
# gradient, and lets oneDNN's verbose log say which kernel and layout ran.
AVX2_SCRIPT = """
import os, sys
import numpy as np
from mindspore import Tensor, nn
sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "tests")]
from src.kernels.build import build_library
from src.kernels.onednn_pool import OneDNNMaxPool2d
from test_onednn_pool import GradOfSum, numpy_max_pool
library = str(build_library())
for channels in (16, 24, 5):
    stock = nn.MaxPool2d(3, 2, pad_mode="pad", padding=1)
    fast = OneDNNMaxPool2d(stock, library)
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((2, channels, 15, 16)).astype(np.float32)
    y = fast(Tensor(x)).asnumpy()
    np.testing.assert_array_equal(y, numpy_max_pool(x, 3, 2, 1))
    probe = Tensor(rng.standard_normal(y.shape).astype(np.float32))
    np.testing.assert_allclose(GradOfSum(fast)(Tensor(x), probe).asnumpy(),
                               GradOfSum(stock)(Tensor(x), probe).asnumpy(), rtol=1e-6, atol=1e-6)
print("CHECKED")
"""


def test_at_avx2_max_pooling_runs_blocked_where_the_channels_fit(tmp_path, library):
    """At AVX2 oneDNN has no JIT max pooling on the plain layout (its simple_nchw kernel is ~20x slower):
    channel counts that 8-channel blocks fit run blocked (aBcd8b) forward and backward; others stay plain."""
    script = tmp_path / "pool_avx2.py"  # MindSpore compiles from source files only
    script.write_text(AVX2_SCRIPT)
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ONEDNN_VERBOSE": "1", "GLOG_v": "3"}
    result = subprocess.run([sys.executable, str(script)], cwd=build.REPO_ROOT, env=env, capture_output=True,
                            text=True, check=False, timeout=600)
    assert result.returncode == 0 and "CHECKED" in result.stdout, result.stderr[-2000:]
    runs = [line.split(",") for line in result.stdout.splitlines() if ",exec,cpu,pooling," in line]
    by_channels = {}
    for fields in runs:  # implementation, direction, layouts, problem
        channels = int(fields[-2].split("ic")[1].split("_")[0])
        by_channels.setdefault(channels, set()).add((fields[6], fields[7], fields[8].split()[0]))
    assert by_channels[16] == by_channels[24] == {
        ("jit:avx2", "forward_training", "src:f32::blocked:aBcd8b::f0"),
        ("jit:avx2", "backward_data", "src:f32::blocked:aBcd8b::f0")}
    assert {run[2] for run in by_channels[5]} == {"src:f32::blocked:abcd::f0"}
