"""Initialisation: the distributions MindSpore 1.9 drew for the original code, and the authors' PyTorch ones.

Each drawn tensor is compared with an independent reference: scipy's distributions (truncated normal, normal,
uniform) by their moments, bounds and a Kolmogorov-Smirnov test, and PyTorch's own ``nn.init`` draws.
"""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
import pytest
from mindspore.common.initializer import initializer
from scipy import stats

from src.errors import DropCovError
from src.models import create_model
from src.models.init import dense_initializer, eca_initializer

KS_P_MIN = 1e-3  # a fixed seed draws the same values every run; this only guards against a wrong distribution


def parameters(net) -> dict[str, np.ndarray]:
    return {param.name: param.asnumpy() for param in net.get_parameters()}


def summary(name: str, values: np.ndarray) -> str:
    return (f"{name}: n={values.size} mean={values.mean():+.2e} std={values.std():.6f} "
            f"min={values.min():+.6f} max={values.max():+.6f}")


@pytest.fixture(scope="module")
def mindspore_style() -> dict[str, np.ndarray]:
    ms.set_seed(11)
    return parameters(create_model("resnet18", num_classes=1001))


@pytest.fixture(scope="module")
def torch_style() -> dict[str, np.ndarray]:
    ms.set_seed(12)
    return parameters(create_model("resnet18", num_classes=1000, arch_style="torch", conv_init="HeNormal",
                                   dense_init="PyTorchDefault", eca_init="PyTorchDefault"))


def test_classifier_is_truncated_normal_cut_at_two_sigma(mindspore_style):
    """fc.weight: TruncatedNormal(0.01) as MindSpore 1.9 drew it, scipy truncnorm(-2, 2, scale=0.01)."""
    weight = mindspore_style["fc.weight"].ravel()
    reference = stats.truncnorm(-2.0, 2.0, scale=0.01)
    print(summary("fc.weight", weight), f"(reference std {reference.std():.6f})")
    assert weight.size == 1001 * 8256
    assert np.abs(weight).max() <= 0.02 + 1e-9 and np.abs(weight).max() > 0.0199
    assert abs(weight.mean()) < 5 * reference.std() / math.sqrt(weight.size)
    assert weight.std() == pytest.approx(reference.std(), rel=2e-3)  # 0.008796, untruncated would be 0.01
    assert stats.kstest(weight[::97], reference.cdf).pvalue > KS_P_MIN
    assert not mindspore_style["fc.bias"].any()


def test_eca_conv1d_is_normal_sigma_001(mindspore_style):
    """eca_layer.conv: MindSpore 1.9's Conv1d default 'normal' = N(0, 0.01^2) (2.10's default is U(+-0.577))."""
    kernel = mindspore_style["eca_layer.conv.weight"]
    assert kernel.shape == (1, 1, 1, 3) and np.abs(kernel).max() < 0.05
    draws = initializer(eca_initializer("Normal"), (200_000, 1, 1, 3), ms.float32).asnumpy().ravel()
    print(summary("eca Normal draws", draws))
    assert draws.std() == pytest.approx(0.01, rel=5e-3) and abs(draws.mean()) < 5 * 0.01 / math.sqrt(draws.size)
    assert np.abs(draws).max() > 0.04  # not truncated
    assert stats.kstest(draws[::7], stats.norm(scale=0.01).cdf).pvalue > KS_P_MIN


def test_convolutions_are_xavier_uniform(mindspore_style):
    """Conv2d: U(+-sqrt(6 / (fan_in + fan_out))), fans counting the kernel, as the original re-drew them."""
    for name in ("conv1.weight", "layer4.1.conv2.weight", "layer_reduce.weight"):
        weight = mindspore_style[name]
        receptive = int(np.prod(weight.shape[2:]))
        bound = math.sqrt(6.0 / ((weight.shape[0] + weight.shape[1]) * receptive))
        values = weight.ravel()
        print(summary(name, values), f"(bound {bound:.6f})")
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.99 * bound
        assert values.std() == pytest.approx(bound / math.sqrt(3.0), rel=2e-2 if values.size < 20_000 else 3e-3)
        assert stats.kstest(values[::3], stats.uniform(-bound, 2 * bound).cdf).pvalue > KS_P_MIN


def test_batch_norm_starts_at_one_and_zero(mindspore_style):
    assert (mindspore_style["bn1.gamma"] == 1).all() and not mindspore_style["bn1.beta"].any()


def test_torch_recipe_convolutions_are_kaiming_normal_fan_out(torch_style):
    """conv_init HeNormal = kaiming_normal_(mode='fan_out', nonlinearity='relu'): PyTorch's draws agree."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    for name in ("layer3.0.conv1.weight", "layer_reduce.weight"):
        weight = torch_style[name]
        expected = torch.nn.init.kaiming_normal_(torch.empty(weight.shape), mode="fan_out",
                                                 nonlinearity="relu").numpy().ravel()
        fan_out = weight.shape[0] * int(np.prod(weight.shape[2:]))
        values = weight.ravel()
        print(summary(name, values), f"(sqrt(2/fan_out) {math.sqrt(2.0 / fan_out):.6f})")
        assert values.std() == pytest.approx(math.sqrt(2.0 / fan_out), rel=1e-2)
        assert values.std() == pytest.approx(expected.std(), rel=2e-2)
        assert stats.ks_2samp(values, expected).pvalue > KS_P_MIN


def test_torch_recipe_classifier_and_eca_are_pytorch_defaults(torch_style):
    """dense_init/eca_init PyTorchDefault: nn.Linear's and nn.Conv1d's weight and bias U(+-1/sqrt(fan_in))."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    linear = torch.nn.Linear(8256, 1000)
    bound = 1.0 / math.sqrt(8256)
    for name, expected in (("fc.weight", linear.weight), ("fc.bias", linear.bias)):
        values = torch_style[name].ravel()
        expected = expected.detach().numpy().ravel()
        print(summary(name, values), f"(bound {bound:.6f})")
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.99 * bound
        assert values.std() == pytest.approx(bound / math.sqrt(3.0), rel=2e-2 if values.size < 10_000 else 2e-3)
        assert stats.ks_2samp(values[::7], expected[::7]).pvalue > KS_P_MIN
    kernel = torch_style["eca_layer.conv.weight"]
    assert np.abs(kernel).max() <= 1 / math.sqrt(3.0)
    draws = initializer(eca_initializer("PyTorchDefault"), (100_000, 1, 1, 3), ms.float32).asnumpy().ravel()
    conv1d = torch.nn.Conv1d(1, 100_000, 3, bias=False).weight.detach().numpy().ravel()  # fan_in 3 as well
    assert np.abs(draws).max() <= 1 / math.sqrt(3.0) and np.abs(draws).max() > 0.99 / math.sqrt(3.0)
    assert stats.ks_2samp(draws[::3], conv1d[::3]).pvalue > KS_P_MIN


def test_truncated_normal_scheme_is_not_mindspore_210s_default():
    """MindSpore 2.10's TruncatedNormal(0.01) takes -2, 2 as absolute bounds: std 0.01, values past 2 sigma."""
    from mindspore.common.initializer import TruncatedNormal

    ours = initializer(dense_initializer("TruncatedNormal"), (400_000,), ms.float32).asnumpy()
    plain = initializer(TruncatedNormal(0.01), (400_000,), ms.float32).asnumpy()
    assert np.abs(ours).max() <= 0.02 < np.abs(plain).max()
    assert ours.std() == pytest.approx(0.0087962, rel=5e-3) and plain.std() == pytest.approx(0.01, rel=5e-3)


def test_unknown_eca_init_is_named():
    with pytest.raises(DropCovError, match="unknown eca_init='Zeros'"):
        create_model("resnet18", eca_init="Zeros")
