"""The networks this repository builds, declared once: name, architecture, options and their allowed values.

Each network is a :class:`ModelSpec` registered with :func:`src.models._registry.register_model`. The
registry, the config's allowed values, checkpoint description, the converter and ``model_info`` all read
these facts; nothing else keeps a copy. This module imports no MindSpore, so the config can be checked
before MindSpore is loaded (the CPU instruction-set cap must be set first).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from ..errors import DropCovError
from ._registry import ModelSpec, register_model

STAGE_WIDTHS = (64, 128, 256, 512)
"""Channels of the four ResNet stages (times the block expansion at each stage's output)."""
HEADS = ("dropcov", "gap")
"""Classification heads of the ResNets: DropCov covariance pooling, or global average pooling."""
POST_NORMS = ("none", "isqrt")
"""Covariance post-normalisation of the DropCov head: none (the published checkpoints) or iSQRT."""
ARCH_STYLES = ("mindspore", "torch")
"""Padding and BatchNorm of the original MindSpore code, or of the authors' PyTorch code."""
LAYER4_STRIDES = (0, 1, 2)
"""Stride of layer4: 0 = auto (1 for the DropCov head, 2 for GAP)."""
RESNET_OPTIONS = ("num_classes", "head", "cov_dim", "post_norm", "isqrt_iters", "layer4_stride",
                  "adaptive_dropout", "arch_style", "conv_init", "dense_init", "eca_init")
"""Keyword arguments of the ResNet builder (config keys of the same names; ``num_classes`` is ``class_num``)."""
VIT_ARCH_FIELDS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "wr_heads", "wr_dim", "token_dim")
"""Architecture fields of a transformer that ``create_model`` may override (e.g. a small model for a CPU)."""
VIT_OPTIONS = ("num_classes", "image_size", "drop_path_rate", "drop_rate")
"""Keyword arguments of every transformer builder besides :data:`VIT_ARCH_FIELDS` (``image_size`` is the
config's ``train_image_size``); the DropCov ones also take ``token_drop`` and ``cov_drop``."""


@dataclass(frozen=True)
class ResNetArch:
    """Depth of a ResNet: block type (``'basic'`` or ``'bottleneck'``) and blocks per stage."""

    block: str
    layers: tuple[int, int, int, int]

    @property
    def expansion(self) -> int:
        """Output channels of a block per unit of stage width (1 basic, 4 bottleneck)."""
        return 1 if self.block == "basic" else 4

    @property
    def out_channels(self) -> int:
        """Channels of the last feature map (C5)."""
        return STAGE_WIDTHS[-1] * self.expansion


@dataclass(frozen=True)
class ViTArch:
    """Shape of one of the authors' SoT-style vision transformers, and its head.

    ``embed_dim`` wide, ``depth`` pre-norm blocks of ``num_heads`` heads and MLP ratio ``mlp_ratio``,
    a convolutional token stem of ``token_dim`` channels; the DropCov head (``head='dropcov'``) pools
    ``wr_heads`` cross-covariances of width ``wr_dim``, the baseline (``'class_token'``) classifies the
    class token only.
    """

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    head: str
    wr_heads: int = 6
    wr_dim: int = 24
    token_dim: int = 64


def _resnet(name: str, block: str, layers: tuple[int, int, int, int]) -> ModelSpec:
    return ModelSpec(name=name, family="resnet", builder="src.models.resnet:build_resnet",
                     arch=ResNetArch(block, layers), options=RESNET_OPTIONS, classifier=("fc",))


def _vit(name: str, depth: int, mlp_ratio: float, head: str) -> ModelSpec:
    dropcov = head == "dropcov"
    options = VIT_OPTIONS + (("token_drop", "cov_drop") if dropcov else ()) + VIT_ARCH_FIELDS
    classifier = ("classifier.cls_fc", "classifier.visual_fc") if dropcov else ("classifier.cls_fc",)
    return ModelSpec(name=name, family="vit", builder="src.models.vit:build_vit",
                     arch=ViTArch(384, depth, 6, mlp_ratio, head), options=options, classifier=classifier)


for _spec in (
    _resnet("resnet18", "basic", (2, 2, 2, 2)),
    _resnet("resnet34", "basic", (3, 4, 6, 3)),
    _resnet("resnet50", "bottleneck", (3, 4, 6, 3)),
    _resnet("resnet101", "bottleneck", (3, 4, 23, 3)),
    _resnet("resnet152", "bottleneck", (3, 8, 36, 3)),
    # the authors' Deit_drop_Small and T2T_ViT_14, and the same backbones with the class-token head only
    _vit("deit_small_dropcov", 12, 4.0, "dropcov"),
    _vit("t2t_vit_14_dropcov", 14, 3.0, "dropcov"),
    _vit("deit_small_cls", 12, 4.0, "class_token"),
    _vit("t2t_vit_14_cls", 14, 3.0, "class_token"),
):
    register_model(_spec)


def resnet_name(block: str, layers: Any) -> str | None:
    """The registered ResNet with these blocks per stage (read from a checkpoint's names), or None."""
    from ._registry import model_specs

    wanted = tuple(layers)
    for spec in model_specs("resnet"):
        if spec.arch.block == block and spec.arch.layers == wanted:
            return spec.name
    return None


def resolve_layer4_stride(head: str, layer4_stride: int) -> int:
    """``layer4_stride`` with 0 resolved: 1 for the DropCov head, 2 for GAP."""
    if layer4_stride:
        return layer4_stride
    return 1 if head == "dropcov" else 2


def _choice_error(key: str, value: object, choices: tuple) -> DropCovError:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return DropCovError(f"{key}={value!r} is not supported{hint}: choose one of "
                        f"{', '.join(str(c) for c in choices)}")


def validate_model_options(num_classes: int = 1000, head: str = "dropcov", cov_dim: int = 128,
                           post_norm: str = "none", isqrt_iters: int = 5, layer4_stride: int = 0,
                           adaptive_dropout: bool = True, arch_style: str = "mindspore") -> None:
    """Raise :class:`DropCovError` naming the first ResNet option that is out of range."""
    if head not in HEADS:
        raise _choice_error("head", head, HEADS)
    if post_norm not in POST_NORMS:
        raise _choice_error("post_norm", post_norm, POST_NORMS)
    if arch_style not in ARCH_STYLES:
        raise _choice_error("arch_style", arch_style, ARCH_STYLES)
    if isinstance(layer4_stride, bool) or not isinstance(layer4_stride, int) or layer4_stride not in LAYER4_STRIDES:
        raise _choice_error("layer4_stride", layer4_stride, LAYER4_STRIDES)
    for key, value in (("num_classes", num_classes), ("cov_dim", cov_dim), ("isqrt_iters", isqrt_iters)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DropCovError(f"{key}={value!r} is not supported: it must be an integer >= 1")
    if cov_dim < 2 and head == "dropcov":
        raise DropCovError(f"cov_dim={cov_dim!r} is not supported: the DropCov head needs cov_dim >= 2")
    if not isinstance(adaptive_dropout, bool):
        raise DropCovError(f"adaptive_dropout={adaptive_dropout!r} is not supported: use true or false")
