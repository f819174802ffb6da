"""Evaluation-mode batch norm on our kernel (src/kernels/batch_norm.py): numbers, training behaviour, wiring."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from src.kernels import build
from src.kernels.batch_norm import InferenceBatchNorm2d, can_replace_batch_norm
from src.kernels.swap import apply_conv_backend, use_inference_batch_norms
from src.models import create_model


@pytest.fixture(scope="module")
def library() -> str:
    return str(build.build_library())


def random_batch_norm(channels: int, eps: float, seed: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=eps, momentum=0.9)
    rng = np.random.default_rng(seed)
    for parameter in (bn.gamma, bn.beta, bn.moving_mean):
        parameter.set_data(Tensor(rng.standard_normal(parameter.shape).astype(np.float32)))
    bn.moving_variance.set_data(Tensor(rng.uniform(0.2, 3.0, bn.moving_variance.shape).astype(np.float32)))
    return bn


@pytest.mark.parametrize("shape, eps", [((2, 5, 7, 3), 1e-5), ((1, 16, 1, 1), 1e-4), ((3, 64, 9, 9), 1e-3)])
def test_evaluation_matches_the_formula_and_mindspores_batch_norm(shape, eps, library):
    bn = random_batch_norm(shape[1], eps, seed=shape[1])
    fast = InferenceBatchNorm2d(bn, library)
    fast.set_train(False)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    gamma, beta, mean, variance = (p.asnumpy().astype(np.float64)[None, :, None, None]
                                   for p in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    expected = (x - mean) / np.sqrt(variance + eps) * gamma + beta
    y = fast(Tensor(x)).asnumpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, bn(Tensor(x)).asnumpy(), rtol=1e-5, atol=1e-5)


def test_training_mode_is_mindspores_batch_norm(library):
    """In training the twin normalises by the batch and updates the same moving statistics."""
    reference, twin_of = random_batch_norm(6, 1e-5, seed=3), random_batch_norm(6, 1e-5, seed=3)
    fast = InferenceBatchNorm2d(twin_of, library)
    reference.set_train(True)
    fast.set_train(True)
    x = Tensor(np.random.default_rng(4).standard_normal((4, 6, 5, 5)).astype(np.float32) * 3 + 1)
    np.testing.assert_allclose(fast(x).asnumpy(), reference(x).asnumpy(), rtol=1e-5, atol=1e-5)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(getattr(twin_of, name).asnumpy(), getattr(reference, name).asnumpy(), rtol=1e-6)
    assert not np.allclose(twin_of.moving_mean.asnumpy(), random_batch_norm(6, 1e-5, seed=3).moving_mean.asnumpy())


def test_only_moving_statistics_batch_norms_are_replaced(library):
    assert can_replace_batch_norm(nn.BatchNorm2d(4))
    assert not can_replace_batch_norm(nn.BatchNorm2d(4, use_batch_statistics=True))
    assert not can_replace_batch_norm(nn.BatchNorm1d(4))
    net = nn.SequentialCell([nn.BatchNorm2d(4), nn.BatchNorm2d(4, use_batch_statistics=False), nn.ReLU()])
    assert use_inference_batch_norms(net, library) == 1
    assert isinstance(net[0], InferenceBatchNorm2d) and type(net[1]) is nn.BatchNorm2d


@pytest.mark.parametrize("net_name, head", [("resnet18", "dropcov"), ("resnet50", "gap")])
def test_resnet_on_our_kernels_keeps_its_parameters_and_evaluates_like_stock(net_name, head, library):
    """conv_backend onednn swaps convolutions, pools and batch norms: same parameter names, shapes and order,
    and the evaluation logits of the stock network."""
    ms.set_seed(8)
    stock = create_model(net_name, num_classes=10, head=head)
    fast = create_model(net_name, num_classes=10, head=head)
    rng = np.random.default_rng(9)
    for parameter in stock.get_parameters():  # random statistics, so that the batch norms do something
        values = rng.uniform(0.5, 1.5, parameter.shape) if "moving_variance" in parameter.name else (
            rng.standard_normal(parameter.shape) * (0.1 if "moving_mean" in parameter.name else 1.0)
            if any(key in parameter.name for key in ("moving_mean", "gamma", "beta")) else parameter.asnumpy())
        parameter.set_data(Tensor(np.asarray(values, np.float32)))
    ms.load_param_into_net(fast, {p.name: ms.Parameter(Tensor(p.asnumpy()), name=p.name)
                                  for p in stock.get_parameters()}, strict_load=True)
    layout = [(p.name, p.shape) for p in stock.get_parameters()]
    assert apply_conv_backend(fast, "onednn", "CPU", "O0") == "onednn"
    assert [(p.name, p.shape) for p in fast.get_parameters()] == layout
    batch_norms = [cell for _, cell in fast.cells_and_names() if isinstance(cell, InferenceBatchNorm2d)]
    assert len(batch_norms) == sum(isinstance(cell, nn.BatchNorm2d) for _, cell in stock.cells_and_names())
    stock.set_train(False)
    fast.set_train(False)
    x = Tensor(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    expected = stock(x).asnumpy()
    np.testing.assert_allclose(fast(x).asnumpy(), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
