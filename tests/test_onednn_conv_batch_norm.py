"""Evaluation's fusions: batch norm and ReLU folded into the oneDNN convolution (src/kernels/conv_batch_norm.py),
the residual addition and its ReLU in one pass (src/kernels/add_relu.py)."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from onednn_helpers import numpy_conv2d

from src.errors import DropCovError
from src.kernels import build
from src.kernels.add_relu import InferenceAddReLU
from src.kernels.conv_batch_norm import EvaluationIdentity, OneDNNConvBatchNorm
from src.kernels.onednn_conv import OneDNNConv2d
from src.kernels.swap import apply_conv_backend
from src.models import create_model
from src.models.cell_surgery import child_cell
from src.models.layers import ResidualReLU

GEOMETRIES = {  # (in, out, kernel, stride, pad_mode, padding, input size)
    "1x1 stride 1": (16, 24, 1, 1, "pad", 0, 9),
    "1x1 stride 2": (8, 16, 1, 2, "pad", 0, 10),
    "3x3 stride 1 pad 1": (8, 8, 3, 1, "pad", 1, 9),
    "3x3 stride 2 same": (6, 16, 3, 2, "same", 0, 11),
    "7x7 stride 2 pad 3": (3, 16, 7, 2, "pad", 3, 20),
}


@pytest.fixture(scope="module")
def library() -> str:
    return str(build.build_library())


def random_pair(name: str, seed: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    cin, cout, kernel, stride, pad_mode, padding, _ = GEOMETRIES[name]
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, pad_mode=pad_mode, padding=padding, has_bias=False)
    bn = nn.BatchNorm2d(cout, eps=1e-4, momentum=0.9)
    rng = np.random.default_rng(seed)
    conv.weight.set_data(Tensor(rng.standard_normal(conv.weight.shape).astype(np.float32) * 0.3))
    for parameter in (bn.gamma, bn.beta, bn.moving_mean):
        parameter.set_data(Tensor(rng.standard_normal(parameter.shape).astype(np.float32)))
    bn.moving_variance.set_data(Tensor(rng.uniform(0.2, 3.0, bn.moving_variance.shape).astype(np.float32)))
    return conv, bn


def numpy_pads(name: str, size: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) as MindSpore pads: 'same' puts the extra row/column at the bottom/right."""
    _, _, kernel, stride, pad_mode, padding, _ = GEOMETRIES[name]
    if pad_mode == "pad":
        return (padding,) * 4
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, total // 2, total - total // 2


@pytest.mark.parametrize("layout", ["blocked", "plain"])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_evaluation_is_conv_then_batch_norm_then_relu(name, relu, layout, library, monkeypatch):
    """Both layouts (post-ops on the blocked one, a pass after the plain one) give the float64 numpy chain."""
    monkeypatch.setenv("DROPCOV_ONEDNN_LAYOUT", layout)
    conv, bn = random_pair(name, seed=len(name))
    fused = OneDNNConvBatchNorm(OneDNNConv2d(conv, library), bn, relu, library)
    fused.set_train(False)
    size = GEOMETRIES[name][-1]
    x = np.random.default_rng(3).standard_normal((2, conv.in_channels, size, size)).astype(np.float32)
    gamma, beta, mean, variance = (p.asnumpy().astype(np.float64)[None, :, None, None]
                                   for p in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    expected = (numpy_conv2d(x, conv.weight.asnumpy(), conv.stride, pads=numpy_pads(name, size)) - mean) \
        / np.sqrt(variance + bn.eps) * gamma + beta
    if relu:
        expected = np.maximum(expected, 0)
    y = fused(Tensor(x)).asnumpy()
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    if relu:
        assert (y == 0).mean() > 0.2  # the ReLU did cut something


def test_training_runs_the_convolution_alone(library):
    conv, bn = random_pair("3x3 stride 1 pad 1", seed=4)
    fused = OneDNNConvBatchNorm(OneDNNConv2d(conv, library), bn, True, library)
    fused.set_train(True)
    x = np.random.default_rng(5).standard_normal((2, 8, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(fused(Tensor(x)).asnumpy(), numpy_conv2d(x, conv.weight.asnumpy(), 1, pads=(1,) * 4),
                               rtol=1e-4, atol=1e-4)


def test_only_a_2d_onednn_convolution_and_its_batch_norm_fold(library):
    conv, bn = random_pair("1x1 stride 1", seed=1)
    with pytest.raises(DropCovError, match="2-D OneDNNConv2d"):
        OneDNNConvBatchNorm(conv, bn, False, library)
    with pytest.raises(DropCovError, match="BatchNorm2d over the convolution's 24 channels"):
        OneDNNConvBatchNorm(OneDNNConv2d(conv, library), nn.BatchNorm2d(8), False, library)


@pytest.mark.parametrize("net_name, head", [("resnet18", "dropcov"), ("resnet34", "gap"), ("resnet50", "dropcov")])
def test_declared_chains_cover_every_convolution_once(net_name, head):
    """Each network lists (Conv2d, BatchNorm2d, ReLU or None) chains; together they hold every 2-D convolution
    and batch norm exactly once, and no ReLU twice (a shared ReLU cannot become the identity)."""
    net = create_model(net_name, num_classes=10, head=head)
    chained = {"conv": [], "bn": [], "relu": []}
    for _, cell in net.cells_and_names():
        for conv_name, bn_name, relu_name in getattr(cell, "conv_batch_norm_chains", tuple)():
            conv, bn = child_cell(cell, conv_name), child_cell(cell, bn_name)
            assert type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d
            assert bn.num_features == conv.out_channels
            chained["conv"].append(id(conv))
            chained["bn"].append(id(bn))
            if relu_name is not None:
                assert type(child_cell(cell, relu_name)) is nn.ReLU
                chained["relu"].append(id(child_cell(cell, relu_name)))
    convolutions = [id(cell) for _, cell in net.cells_and_names() if type(cell) is nn.Conv2d]
    batch_norms = [id(cell) for _, cell in net.cells_and_names() if type(cell) is nn.BatchNorm2d]
    assert sorted(chained["conv"]) == sorted(convolutions)
    assert sorted(chained["bn"]) == sorted(batch_norms)
    assert len(set(chained["relu"])) == len(chained["relu"]) > 0


def _randomised_twins(net_name: str, head: str) -> tuple[nn.Cell, nn.Cell]:
    """Two equal networks with random batch-norm statistics (so that folding them shows)."""
    ms.set_seed(8)
    stock = create_model(net_name, num_classes=10, head=head, adaptive_dropout=False)
    rng = np.random.default_rng(9)
    for parameter in stock.get_parameters():
        if "moving_variance" in parameter.name:
            parameter.set_data(Tensor(rng.uniform(0.5, 1.5, parameter.shape).astype(np.float32)))
        elif any(key in parameter.name for key in ("moving_mean", "gamma", "beta")):
            parameter.set_data(Tensor((rng.standard_normal(parameter.shape) * 0.2 + (
                1.0 if "gamma" in parameter.name else 0.0)).astype(np.float32)))
    fast = create_model(net_name, num_classes=10, head=head, adaptive_dropout=False)
    ms.load_param_into_net(fast, {p.name: ms.Parameter(Tensor(p.asnumpy()), name=p.name)
                                  for p in stock.get_parameters()}, strict_load=True)
    return stock, fast


@pytest.mark.parametrize("shape", [(2, 16, 9, 9), (3, 5, 7, 3), (1, 1, 1, 1), (4, 64, 56, 56)])
def test_add_relu_evaluation_is_one_pass_of_the_formula_and_training_is_the_cell(shape, library):
    """Sizes that are and are not whole 64-byte lines, split over the threads or not."""
    twin = InferenceAddReLU(ResidualReLU(), library)
    rng = np.random.default_rng(len(shape))
    x, identity = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    twin.set_train(False)
    y = twin(Tensor(x), Tensor(identity)).asnumpy()
    np.testing.assert_array_equal(y, np.maximum(x + identity, 0))
    twin.set_train(True)
    np.testing.assert_array_equal(twin(Tensor(x), Tensor(identity)).asnumpy(), np.maximum(x + identity, 0))


@pytest.mark.parametrize("net_name, head, chains", [("resnet18", "dropcov", 21), ("resnet50", "gap", 53)])
def test_fused_network_trains_and_evaluates_like_stock(net_name, head, chains, library):
    """apply_conv_backend folds every chain and keeps every parameter name; training mode normalises by the
    batch and updates the moving averages as stock does; evaluation then reads the updated statistics.

    ResNet-18 takes optimizer steps too (ResNet-50's random statistics at 64 px amplify the kernels' float32
    rounding differences within one step, with or without folding)."""
    stock, fast = _randomised_twins(net_name, head)
    layout = [(p.name, p.shape) for p in stock.get_parameters()]
    assert apply_conv_backend(fast, "onednn", "CPU", "O0") == "onednn"
    assert [(p.name, p.shape) for p in fast.get_parameters()] == layout
    cells = [cell for _, cell in fast.cells_and_names()]
    assert sum(isinstance(cell, OneDNNConvBatchNorm) for cell in cells) == chains
    relus = sum(cell.relu for cell in cells if isinstance(cell, OneDNNConvBatchNorm))
    assert sum(isinstance(cell, EvaluationIdentity) for cell in cells) == chains + relus
    blocks = {"resnet18": 8, "resnet50": 16}[net_name]
    assert sum(isinstance(cell, InferenceAddReLU) for cell in cells) == blocks
    wrapped = {id(cell.cell) for cell in cells if isinstance(cell, InferenceAddReLU)}
    assert {id(cell) for cell in cells if type(cell) is ResidualReLU} == wrapped

    before = {p.name: p.asnumpy().copy() for p in stock.get_parameters()}
    rng = np.random.default_rng(10)
    x = Tensor(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    labels = Tensor(np.array([1, 7], np.int32))
    outputs = []
    for net in (stock, fast):
        if net_name == "resnet18":
            step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.SoftmaxCrossEntropyWithLogits(
                sparse=True, reduction="mean")), nn.Momentum(net.trainable_params(), 0.01, 0.9))
            step.set_train()
            outputs.append([step(x, labels).asnumpy() for _ in range(2)])
        else:
            net.set_train(True)
            outputs.append([net(x).asnumpy() for _ in range(2)])
    for fast_output, stock_output in zip(outputs[1], outputs[0]):
        np.testing.assert_allclose(fast_output, stock_output, rtol=2e-4, atol=2e-4 * np.abs(stock_output).max())
    for p_fast, p_stock in zip(fast.get_parameters(), stock.get_parameters()):
        if "moving" in p_stock.name:  # updated by training, read by the folded evaluation
            assert not np.allclose(p_stock.asnumpy(), before[p_stock.name]), p_stock.name
            np.testing.assert_allclose(p_fast.asnumpy(), p_stock.asnumpy(), rtol=1e-3, atol=1e-4)
    stock.set_train(False)
    fast.set_train(False)
    expected = stock(x).asnumpy()
    np.testing.assert_allclose(fast(x).asnumpy(), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_surgery_on_a_network_in_training_mode_leaves_every_cell_training(library):
    """Twins take the mode of the cell they replace (a new cell starts in evaluation mode): a network swapped
    while training keeps its batch norms and ReLUs in the training graph."""
    net = create_model("resnet18", num_classes=10, head="dropcov")
    net.set_train(True)
    assert apply_conv_backend(net, "onednn", "CPU", "O0") == "onednn"
    twins = [cell for _, cell in net.cells_and_names() if isinstance(cell, (OneDNNConvBatchNorm, EvaluationIdentity,
                                                                             InferenceAddReLU))]
    assert twins and all(cell.training for cell in twins)
    assert all(cell.training for _, cell in net.cells_and_names())
