"""The DropCov transformers against an independent PyTorch build of the authors' network.

torch_reference/vit.py rewrites the authors' network in PyTorch; its seeded random weights go
through the converter's name map (src/models/vit_mapping.py) into ``create_model``. Evaluation logits
must agree to 1e-4 relative; in training mode the deterministic parts (BatchNorm on batch statistics,
the moving statistics, gradients) are compared with the random ones (token mask, dropout, drop path)
switched off on both sides.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mindspore as ms  # noqa: E402

from src.models import create_model  # noqa: E402
from src.models.vit_mapping import convert_vit_state_dict, vit_mindspore_name  # noqa: E402
from torch_reference.vit import build_reference, randomise  # noqa: E402

TINY = {"depth": 2}  # the real widths (384, 6 heads, wr 6 x 24) with 2 blocks


def relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|."""
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def load_reference_weights(network: ms.nn.Cell, reference: torch.nn.Module, net_name: str) -> None:
    """Copy the reference's state dict into ``network`` through the converter's mapping."""
    shapes = {param.name: tuple(param.shape) for param in network.get_parameters()}
    parameters = convert_vit_state_dict(reference.state_dict(), net_name, shapes)
    not_loaded, unused = ms.load_param_into_net(
        network, {name: ms.Parameter(ms.Tensor(value), name=name) for name, value in parameters.items()})
    assert not not_loaded and not unused, (not_loaded, unused)


def pair(backbone: str, dropcov: bool, image_size: int, seed: int, num_classes: int = 10, **options):
    """(reference, network) with the same random weights, both in evaluation mode."""
    reference = randomise(build_reference(backbone, num_classes=num_classes, img_size=image_size,
                                          representation=dropcov, **options), seed=seed).eval()
    net_name = f"{backbone}_dropcov" if dropcov else f"{backbone}_cls"
    network = create_model(net_name, num_classes=num_classes, image_size=image_size, **options)
    load_reference_weights(network, reference, net_name)
    network.set_train(False)
    return reference, network


def images(batch: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("backbone, dropcov, image_size", [
    ("deit_small", True, 112),     # 14 x 14 tokens as at 224 (the last transition does not pool)
    ("t2t_vit_14", True, 64),      # 4 x 4 tokens
    ("deit_small", False, 64),
])
def test_eval_logits_equal_pytorch_depth_reduced(backbone, dropcov, image_size):
    reference, network = pair(backbone, dropcov, image_size, seed=image_size, **TINY)
    x = images(2, image_size, seed=1)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    actual = network(ms.Tensor(x)).asnumpy()
    difference = relative_difference(actual, expected)
    print(f"{backbone} dropcov={dropcov} {image_size}px depth 2: max abs {np.max(np.abs(actual - expected)):.2e}, "
          f"relative {difference:.2e}")
    assert difference < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("net_name", ["deit_small_dropcov"])  # T2T-ViT-14 differs in depth and MLP width only
def test_eval_logits_equal_pytorch_full_size(net_name):
    """The published network at 224x224, 1000 classes."""
    backbone = net_name[: -len("_dropcov")]
    reference, network = pair(backbone, True, 224, seed=len(net_name), num_classes=1000)
    x = images(2, 224, seed=2)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    actual = network(ms.Tensor(x)).asnumpy()
    difference = relative_difference(actual, expected)
    print(f"{net_name} 224px: max abs {np.max(np.abs(actual - expected)):.2e}, relative {difference:.2e}")
    assert difference < 1e-4


class _WeightedSum(ms.nn.Cell):
    def __init__(self, network, weights):
        super().__init__()
        self.network = network
        self.weights = ms.Tensor(weights)

    def construct(self, x):
        return (self.network(x) * self.weights).sum()


@pytest.mark.slow
def test_training_mode_forward_gradients_and_batchnorm_statistics_equal_pytorch():
    """Training mode without the random parts: BatchNorm normalises with batch statistics and updates its
    moving statistics with PyTorch's momentum 0.1; every parameter's gradient equals PyTorch's."""
    options = dict(depth=1, drop_path_rate=0.0)
    reference = randomise(build_reference("deit_small", num_classes=5, img_size=64, **options), seed=3)
    reference.classifier.representation.token_drop = 0.0
    reference.classifier.representation.cov_drop = 0.0
    reference.train()
    network = create_model("deit_small_dropcov", num_classes=5, image_size=64, token_drop=0.0, cov_drop=0.0,
                           **options)
    load_reference_weights(network, reference, "deit_small_dropcov")
    x = images(3, 64, seed=4)
    weights = np.random.default_rng(5).standard_normal((3, 5)).astype(np.float32)

    logits = reference(torch.from_numpy(x))
    (logits * torch.from_numpy(weights)).sum().backward()
    loss = _WeightedSum(network, weights)
    loss.set_train(True)
    parameters = ms.ParameterTuple(network.trainable_params())
    gradients = ms.grad(loss, grad_position=None, weights=parameters)(ms.Tensor(x))

    torch_gradients = {vit_mindspore_name(name): p.grad.numpy() for name, p in reference.named_parameters()
                       if p.requires_grad}
    worst = 0.0
    for param, gradient in zip(parameters, gradients):
        expected = torch_gradients[param.name.removeprefix("network.")]  # the wrapper prefixes the names
        error = float(np.max(np.abs(gradient.asnumpy() - expected)) / (np.max(np.abs(expected)) + 1e-12))
        worst = max(worst, error)
        assert error < 1e-3, (param.name, error)
    print(f"largest relative gradient difference {worst:.2e} over {len(parameters)} parameters")

    # the gradient call ran the forward once in training mode: moving statistics moved by momentum 0.1
    moving = {p.name.removeprefix("network."): p.asnumpy() for p in network.get_parameters() if "moving_" in p.name}
    compared = 0
    for name, buffer in reference.named_buffers():
        target = vit_mindspore_name(name)
        if target in moving:
            np.testing.assert_allclose(moving[target], buffer.numpy(), rtol=1e-4, atol=1e-5, err_msg=target)
            compared += 1
    assert compared == len(moving) == 6  # three transitions' BatchNorm, mean and variance
