"""The oneDNN max-pool kernels (csrc/onednn_kernels.cc, src/kernels/onednn_pool.py) against numpy and MindSpore."""
import numpy as np
import pytest
from mindspore import Tensor, nn, ops
from numpy.lib.stride_tricks import sliding_window_view

from src.errors import DropCovError
from src.kernels import build
from src.kernels.onednn_pool import OneDNNMaxPool2d, can_replace_pool
from src.models import create_model
from src.models.cell_surgery import apply_conv_backend, use_onednn_max_pools


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
