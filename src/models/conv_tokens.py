"""The DenseNet-style convolutional token stem of the SoT / DropCov vision transformers.

``(B, 3, H, W)`` -> ``(B, N, D)`` word tokens, ``N = g * g`` (``g = 14`` at 224x224):

- ``stem``: Conv2d(3, token_dim, 3, pad 1, bias) -> MaxPool(3, stride 2, pad 1);
- ``stage``: three (dense block, transition) pairs. A dense block has 6 layers of
  ReLU -> conv1x1 (-> 2 x growth) -> ReLU -> conv3x3 pad 1 (-> growth 16), each seeing the concatenation
  of the block input and all previous layers' outputs (no BatchNorm: the authors' timm 0.4.12
  ``DenseBlock`` passes ``nn.ReLU`` as its layers' norm layer). A transition is BatchNorm ->
  conv1x1 (-> 128) -> AvgPool 2x2; the third transition does not pool when ``112 <= H < 224``
  (the authors' ``img_size // 112 == 1`` rule, which keeps a 14x14 grid at 112x112);
- ``transition``: Conv2d(128, D, 1, bias), then flattened to tokens (row-major positions).

Parameter names follow the authors' checkpoints (``visual_tokens.tokens.stem.0.weight``,
``...stage.0.denselayer1.conv1.weight``, ``...stage.1.norm.gamma``, ``...transition.bias``) with
MindSpore's BatchNorm names. Convolutions keep MindSpore's default initialisation, which is
PyTorch's (``HeUniform(sqrt 5)``); BatchNorm eps 1e-5 and PyTorch momentum 0.1 (MindSpore 0.9).
"""
from __future__ import annotations

from collections import OrderedDict

from mindspore import Tensor, nn, ops

GROWTH = 16
BOTTLENECK = 2
LAYERS_PER_BLOCK = 6
TRANSITION_CHANNELS = 128


def last_transition_pools(image_size: int) -> bool:
    """Whether the third transition pools: not for ``112 <= image_size < 224`` (the authors' rule)."""
    return image_size // 112 != 1


def token_grid(image_size: int) -> int:
    """Side ``g`` of the token grid for a square input: ceil(H/2) after the stem, then halved per pool."""
    side = (image_size + 1) // 2 // 2 // 2
    return side // 2 if last_transition_pools(image_size) else side


def conv2d(in_channels: int, out_channels: int, kernel_size: int, has_bias: bool) -> nn.Conv2d:
    """Stride-1 conv with symmetric ``kernel_size // 2`` padding and MindSpore's (= PyTorch's) default init."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, pad_mode="pad", padding=kernel_size // 2,
                     has_bias=has_bias)


class DenseLayer(nn.Cell):
    """ReLU -> ``conv1`` 1x1 -> ReLU -> ``conv2`` 3x3: ``(B, C, h, w)`` -> ``(B, growth, h, w)``."""

    def __init__(self, in_channels: int, growth: int = GROWTH, bottleneck: int = BOTTLENECK) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = conv2d(in_channels, bottleneck * growth, 1, has_bias=False)
        self.conv2 = conv2d(bottleneck * growth, growth, 3, has_bias=False)

    def construct(self, x: Tensor) -> Tensor:
        return self.conv2(self.relu(self.conv1(self.relu(x))))


class DenseBlock(nn.SequentialCell):
    """``denselayer1..L``: each layer's output is concatenated to its input (``C -> C + L * growth``)."""

    def __init__(self, in_channels: int, layers: int = LAYERS_PER_BLOCK, growth: int = GROWTH) -> None:
        super().__init__(OrderedDict(
            (f"denselayer{index + 1}", DenseLayer(in_channels + index * growth, growth)) for index in range(layers)))

    def construct(self, x: Tensor) -> Tensor:
        for layer in self.cell_list:
            x = ops.cat((x, layer(x)), 1)
        return x


class DenseTransition(nn.Cell):
    """``norm`` (BatchNorm) -> ``conv`` 1x1 (no bias) -> AvgPool 2x2/2 (if ``pool``)."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool = True) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels, eps=1e-5, momentum=0.9)
        self.conv = conv2d(in_channels, out_channels, 1, has_bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2) if pool else nn.Identity()

    def construct(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(self.norm(x)))


class DenseTokenStem(nn.Cell):
    """Images ``(B, 3, H, W)`` -> tokens ``(B, g*g, embed_dim)`` (see the module docstring)."""

    def __init__(self, image_size: int, embed_dim: int, token_dim: int = 64) -> None:
        super().__init__()
        self.stem = nn.SequentialCell([conv2d(3, token_dim, 3, has_bias=True),
                                       nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)])
        block_out = TRANSITION_CHANNELS + LAYERS_PER_BLOCK * GROWTH
        self.stage = nn.SequentialCell([
            DenseBlock(token_dim), DenseTransition(token_dim + LAYERS_PER_BLOCK * GROWTH, TRANSITION_CHANNELS),
            DenseBlock(TRANSITION_CHANNELS), DenseTransition(block_out, TRANSITION_CHANNELS),
            DenseBlock(TRANSITION_CHANNELS),
            DenseTransition(block_out, TRANSITION_CHANNELS, pool=last_transition_pools(image_size))])
        self.transition = conv2d(TRANSITION_CHANNELS, embed_dim, 1, has_bias=True)

    def construct(self, x: Tensor) -> Tensor:
        x = self.transition(self.stage(self.stem(x)))
        batch, channels = x.shape[0], x.shape[1]
        return x.reshape(batch, channels, -1).transpose(0, 2, 1)


class VisualTokens(nn.Cell):
    """Holds the stem as ``tokens`` so the names are the checkpoints' ``visual_tokens.tokens.*``."""

    def __init__(self, image_size: int, embed_dim: int, token_dim: int = 64) -> None:
        super().__init__()
        self.tokens = DenseTokenStem(image_size, embed_dim, token_dim)

    def construct(self, x: Tensor) -> Tensor:
        return self.tokens(x)
