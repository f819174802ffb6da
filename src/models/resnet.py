"""ResNet-18/34/50/101/152 backbones with a DropCov or GAP head, laid out like the published checkpoints.

Two ``arch_style`` values:

- ``'mindspore'`` (the published MindSpore checkpoints): ResNet-18/34 stem conv 7x7/2 with explicit
  padding 3, BN (eps 1e-5, momentum 0.1), ReLU, zero pad 1, max-pool 3x3/2 valid; basic blocks with
  3x3 convs padded 1 and BN (1e-4, 0.9); shortcut BN (1e-5, 0.1). ResNet-50/101/152 use TF-style
  ``pad_mode='same'`` in the stem conv, the stem max-pool and every block conv (stride on the 3x3,
  "v1.5") with BN (1e-4, 0.9) everywhere. ``layer_reduce_bn`` is (1e-4, 0.9).
- ``'torch'`` (the authors' PyTorch network): symmetric padding everywhere (stem pad 3, max-pool
  3x3/2 pad 1 — done as zero pad + valid pool, exact after the ReLU), BN eps 1e-5 and momentum 0.9
  (PyTorch's 0.1) everywhere, stride on the 3x3 conv. Parameter names stay the MindSpore ones.

Momentum follows MindSpore's convention: ``moving = momentum*moving + (1-momentum)*batch``.
``layer4_stride`` 0 means 1 for the DropCov head (14x14 map at 224) and 2 for the GAP head.
Initialisation (:mod:`src.models.init`): by default as the original MindSpore code drew it under
MindSpore 1.9 (every Conv2d XavierUniform(gain 1), ``fc`` TruncatedNormal(0.01) cut at 2 sigma with bias 0,
the ECA Conv1d Normal(0.01)), BN gamma 1 beta 0; ``conv_init``/``dense_init``/``eca_init`` name others
(the authors' PyTorch recipe: HeNormal / PyTorchDefault / PyTorchDefault).
"""
from __future__ import annotations

from dataclasses import dataclass

from mindspore import Tensor, nn

from ._registry import ModelSpec
from .dropcov_head import DropCovHead, GlobalAvgPoolHead, batch_norm
from .init import (
    DEFAULT_CONV_INIT,
    DEFAULT_DENSE_INIT,
    DEFAULT_ECA_INIT,
    conv_initializer,
    initialize_weights,
)
from .layers import ResidualReLU
from .specs import STAGE_WIDTHS, ResNetArch, resolve_layer4_stride, validate_model_options


@dataclass(frozen=True)
class ArchStyle:
    """Padding mode and BatchNorm (eps, momentum) per position for one ``arch_style`` and block type."""

    same_padding: bool
    stem_bn: tuple[float, float]
    block_bn: tuple[float, float]
    shortcut_bn: tuple[float, float]
    head_bn: tuple[float, float]


def arch_style_for(arch_style: str, block: str) -> ArchStyle:
    """Settings of ``arch_style`` (``'mindspore'`` or ``'torch'``) for ``block`` (``'basic'``/``'bottleneck'``)."""
    if arch_style == "torch":
        bn = (1e-5, 0.9)
        return ArchStyle(same_padding=False, stem_bn=bn, block_bn=bn, shortcut_bn=bn, head_bn=bn)
    if block == "basic":
        return ArchStyle(same_padding=False, stem_bn=(1e-5, 0.1), block_bn=(1e-4, 0.9),
                         shortcut_bn=(1e-5, 0.1), head_bn=(1e-4, 0.9))
    bn = (1e-4, 0.9)
    return ArchStyle(same_padding=True, stem_bn=bn, block_bn=bn, shortcut_bn=bn, head_bn=bn)


def conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int, same_padding: bool) -> nn.Conv2d:
    """Bias-free conv drawn with the default ``conv_init``; TF ``'same'`` padding or symmetric ``kernel_size // 2``."""
    if same_padding:
        pad_mode, padding = "same", 0
    else:
        pad_mode, padding = "pad", kernel_size // 2
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode=pad_mode,
                     padding=padding, has_bias=False, weight_init=conv_initializer())


def shortcut(in_channels: int, out_channels: int, stride: int, style: ArchStyle) -> nn.SequentialCell | None:
    """The projection shortcut ``down_sample_layer`` = [conv1x1(stride), BN] when the block changes the
    resolution or the width; None for the identity."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.SequentialCell([conv2d(in_channels, out_channels, 1, stride, style.same_padding),
                              batch_norm(out_channels, *style.shortcut_bn)])


def _shortcut_chain(block: nn.Cell) -> tuple[tuple[str, str, None], ...]:
    """The projection shortcut's (convolution, batch norm) of ``block``, if it has one."""
    return (("down_sample_layer.0", "down_sample_layer.1", None),) if block.down_sample else ()


class BasicBlock(nn.Cell):
    """conv3x3(stride) -> ``bn1d`` -> ReLU -> conv3x3 -> ``bn2d`` -> + shortcut -> ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, style: ArchStyle) -> None:
        super().__init__()
        out_channels = width
        self.conv1 = conv2d(in_channels, width, 3, stride, style.same_padding)
        self.bn1d = batch_norm(width, *style.block_bn)
        self.conv2 = conv2d(width, width, 3, 1, style.same_padding)
        self.bn2d = batch_norm(width, *style.block_bn)
        self.relu1 = nn.ReLU()
        self.add_relu = ResidualReLU()
        self.down_sample_layer = shortcut(in_channels, out_channels, stride, style)
        self.down_sample = self.down_sample_layer is not None

    def conv_batch_norm_chains(self) -> tuple[tuple[str, str, str | None], ...]:
        """(convolution, batch norm, ReLU or None) of ``construct``, each output read only by the next cell."""
        return (("conv1", "bn1d", "relu1"), ("conv2", "bn2d", None)) + _shortcut_chain(self)

    def construct(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu1(self.bn1d(self.conv1(x)))
        out = self.bn2d(self.conv2(out))
        if self.down_sample:
            identity = self.down_sample_layer(x)
        return self.add_relu(out, identity)


class Bottleneck(nn.Cell):
    """conv1x1 -> ``bn1`` -> ReLU -> conv3x3(stride) -> ``bn2`` -> ReLU -> conv1x1 -> ``bn3`` -> + shortcut -> ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, style: ArchStyle) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = conv2d(in_channels, width, 1, 1, style.same_padding)
        self.bn1 = batch_norm(width, *style.block_bn)
        self.conv2 = conv2d(width, width, 3, stride, style.same_padding)
        self.bn2 = batch_norm(width, *style.block_bn)
        self.conv3 = conv2d(width, out_channels, 1, 1, style.same_padding)
        self.bn3 = batch_norm(out_channels, *style.block_bn)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.add_relu = ResidualReLU()
        self.down_sample_layer = shortcut(in_channels, out_channels, stride, style)
        self.down_sample = self.down_sample_layer is not None

    def conv_batch_norm_chains(self) -> tuple[tuple[str, str, str | None], ...]:
        """(convolution, batch norm, ReLU or None) of ``construct``, each output read only by the next cell."""
        return (("conv1", "bn1", "relu1"), ("conv2", "bn2", "relu2"), ("conv3", "bn3", None)) + _shortcut_chain(self)

    def construct(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.down_sample:
            identity = self.down_sample_layer(x)
        return self.add_relu(out, identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNetBackbone(nn.Cell):
    """Stem and the four stages: ``(B, 3, H, W)`` -> C5 ``(B, 512*expansion, H/16 or H/32, ...)``.

    Parameter names: ``conv1``, ``bn1``, ``layer{1..4}.{i}.*`` (see the module docstring for styles).
    """

    def __init__(self, spec: ResNetArch, layer4_stride: int, style: ArchStyle) -> None:
        super().__init__()
        self.conv1 = conv2d(3, 64, 7, 2, style.same_padding)
        self.bn1 = batch_norm(64, *style.stem_bn)
        self.relu = nn.ReLU()
        if style.same_padding:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")
        else:
            # Symmetric pad 1 inside the pooling op: the same result as the original zero pad + valid
            # pool (the input is post-ReLU, >= 0) and ~4x faster on CPU in forward + backward than nn.Pad
            # + valid pool. MindSpore cannot export it to ONNX (MaxPool3DWithArgmax), so export_network
            # swaps in an equal edge-pad + valid pool (src/models/cell_surgery.py, exportable_max_pools).
            # conv_backend onednn runs it on oneDNN's max pooling (src/kernels/onednn_pool.py).
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        block = BLOCKS[spec.block]
        strides = (1, 2, 2, layer4_stride)
        in_channels = 64
        stages = []
        for width, depth, stride in zip(STAGE_WIDTHS, spec.layers, strides):
            blocks = []
            for index in range(depth):
                blocks.append(block(in_channels, width, stride if index == 0 else 1, style))
                in_channels = width * block.expansion
            stages.append(nn.SequentialCell(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def conv_batch_norm_chains(self) -> tuple[tuple[str, str, str | None], ...]:
        """(convolution, batch norm, ReLU) of the stem, each output read only by the next cell."""
        return (("conv1", "bn1", "relu"),)

    def construct(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def _dropcov_head(spec: ResNetArch, style: ArchStyle, num_classes: int, cov_dim: int, post_norm: str,
                  isqrt_iters: int, adaptive_dropout: bool) -> nn.Cell:
    return DropCovHead(spec.out_channels, num_classes, cov_dim=cov_dim, post_norm=post_norm,
                       isqrt_iters=isqrt_iters, adaptive_dropout=adaptive_dropout,
                       bn_eps=style.head_bn[0], bn_momentum=style.head_bn[1])


def _gap_head(spec: ResNetArch, style: ArchStyle, num_classes: int, cov_dim: int, post_norm: str,
              isqrt_iters: int, adaptive_dropout: bool) -> nn.Cell:
    return GlobalAvgPoolHead(spec.out_channels, num_classes)


HEAD_BUILDERS = {"dropcov": _dropcov_head, "gap": _gap_head}


class ResNet(nn.Cell):
    """A ResNet backbone with a DropCov or GAP head; ``construct = forward_head(forward_features(x))``.

    Built with ``auto_prefix=False``, so parameter names are the checkpoint's (``conv1.weight``,
    ``layer1.0.conv1.weight``, ..., ``layer_reduce.weight``, ``fc.weight``, ``eca_layer.conv.weight``)
    rather than ``backbone.*``/``head.*``. ``Parameter.name`` is what ``save_checkpoint``,
    ``load_param_into_net`` and optimisers use; the structural names of ``parameters_and_names()``
    still carry ``backbone.``/``head.``.

    Args: see :func:`src.models.create_model`.
    """

    def __init__(self, spec: ResNetArch, num_classes: int = 1000, head: str = "dropcov", cov_dim: int = 128,
                 post_norm: str = "none", isqrt_iters: int = 5, layer4_stride: int = 0,
                 adaptive_dropout: bool = True, arch_style: str = "mindspore") -> None:
        super().__init__(auto_prefix=False)
        validate_model_options(num_classes=num_classes, head=head, cov_dim=cov_dim, post_norm=post_norm,
                               isqrt_iters=isqrt_iters, layer4_stride=layer4_stride,
                               adaptive_dropout=adaptive_dropout, arch_style=arch_style)
        style = arch_style_for(arch_style, spec.block)
        self.num_classes = num_classes
        self.num_features = spec.out_channels
        self.backbone = ResNetBackbone(spec, resolve_layer4_stride(head, layer4_stride), style)
        self.head = HEAD_BUILDERS[head](spec, style, num_classes, cov_dim, post_norm, isqrt_iters,
                                        adaptive_dropout)
        # A new Cell reports training=False but compiles under phase 'train'; set_train(True) would
        # then reuse that evaluation graph. Start in a consistent evaluation mode.
        self.set_train(False)

    def forward_features(self, x: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` -> last feature map ``(B, num_features, h, w)``."""
        return self.backbone(x)

    def forward_head(self, features: Tensor) -> Tensor:
        """Last feature map -> logits ``(B, num_classes)``."""
        return self.head(features)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def build_resnet(spec: ModelSpec, conv_init: str = DEFAULT_CONV_INIT, dense_init: str = DEFAULT_DENSE_INIT,
                 eca_init: str = DEFAULT_ECA_INIT, **options) -> ResNet:
    """The builder of every registered ResNet (:func:`src.models.create_model` calls it).

    ``options`` are :class:`ResNet`'s; ``conv_init``/``dense_init``/``eca_init`` re-draw the convolution,
    classifier and ECA weights with another named scheme (:mod:`src.models.init`).
    """
    net = ResNet(spec.arch, **options)
    initialize_weights(net, conv_init, dense_init, eca_init)
    return net
