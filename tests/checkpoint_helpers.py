"""Small networks, published layouts and assertions shared by the checkpoint, weights and resume tests."""
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, nn
from mindspore.common.initializer import initializer

LAYOUT_DIR = Path(__file__).parent / "data" / "checkpoint_layout"
CONFIG_TEXT = "net_name: resnet18\nhead: dropcov\nlr_max: 0.12\n"


class TinyNet(nn.Cell):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, has_bias=False, weight_init="xavier_uniform")
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Dense(4, num_classes)

    def construct(self, x):
        return self.fc(self.bn1(self.conv1(x)).mean((2, 3)))


def make_training(num_classes=3, seed=0):
    ms.set_seed(seed)
    net = TinyNet(num_classes)
    schedule = ms.Tensor(np.linspace(0.1, 0.01, 20).astype(np.float32))
    optimizer = nn.Momentum(net.trainable_params(), schedule, momentum=0.9)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    train_step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), optimizer)
    train_step.set_train()
    return net, optimizer, train_step


def batch(seed):
    rng = np.random.default_rng(seed)
    return (ms.Tensor(rng.normal(size=(2, 3, 6, 6)).astype(np.float32)),
            ms.Tensor(rng.integers(0, 3, size=2).astype(np.int32)))


def net_values(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def layout(name, cov_dim=None, class_num=None):
    """Name -> shape of a published layout, optionally with another cov_dim / class count."""
    shapes = {}
    for line in (LAYOUT_DIR / f"{name}.tsv").read_text().splitlines()[1:]:
        param, shape, _ = line.split("\t")
        shapes[param] = tuple(int(dim) for dim in shape.split("x"))
    if cov_dim:
        in_channels = shapes["layer_reduce.weight"][1]
        shapes["layer_reduce.weight"] = (cov_dim, in_channels, 1, 1)
        for stat in ("moving_mean", "moving_variance", "gamma", "beta"):
            shapes[f"layer_reduce_bn.{stat}"] = (cov_dim,)
        shapes["fc.weight"] = (shapes["fc.weight"][0], cov_dim * (cov_dim + 1) // 2)
    if class_num:
        shapes["fc.weight"] = (class_num, shapes["fc.weight"][1])
        shapes["fc.bias"] = (class_num,)
    return shapes


class LayoutNet(nn.Cell):
    """A network with exactly a layout's parameter names and shapes (lazily initialised, never run)."""

    def __init__(self, shapes):
        super().__init__(auto_prefix=False)
        self.params = ms.ParameterTuple([Parameter(initializer("zeros", shape, ms.float32), name=name)
                                         for name, shape in shapes.items()])

    def construct(self, x):
        return x


def assert_one_line(error, *fragments):
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
