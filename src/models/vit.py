"""The authors' DropCov vision transformers (SoT-style ViTs) and their class-token baselines.

``VisionTransformer``: DenseNet-style convolutional token stem (:mod:`src.models.conv_tokens`), a
class token, the fixed sinusoid position table, ``depth`` pre-norm blocks
(``x + DropPath(Attn(LN(x)))``, ``x + DropPath(MLP(LN(x)))``; LayerNorm eps 1e-5, attention without
qkv bias and scale ``(D/heads)^-1/2``, exact GELU), the final LayerNorm ``norm`` and a head:

- ``dropcov``: :class:`src.models.mgcrp_head.MGCrPHead` (DropCov's multi-head cross-covariance
  pooling, summed with the class-token classifier);
- ``class_token``: :class:`src.models.mgcrp_head.ClassTokenHead` (``cls_fc`` on the class token).

Registered networks (:mod:`src.models.specs`; ``embed/depth/heads/MLP ratio``, the DropCov head has 6 heads of
width 24):

- ``deit_small_dropcov`` (the authors' ``Deit_drop_Small``, 384/12/6/4) and ``deit_small_cls``;
- ``t2t_vit_14_dropcov`` (the authors' ``T2T_ViT_14``, 384/14/6/3) and ``t2t_vit_14_cls``.

The ``_cls`` baselines are these backbones with the class-token head (the authors' classifier without its
representation). They are *not* the DeiT-S (16x16 patches) and T2T-ViT-14 (tokens-to-token module)
networks of the DeiT and T2T-ViT papers, whose results the authors' README lists as baselines;
those codes are not in the authors' repository. Swin-T + DropCov is in their README too, but its code
is not published: it is not built here.

Parameter names are the authors' (``cls_token``, ``blocks.3.attn.qkv.weight``, ``norm.gamma``, ...)
with MindSpore's LayerNorm/BatchNorm names; the position table is a constant, not a parameter.
Initialisation as theirs: Linear TruncatedNormal(0.02) / bias 0, LayerNorm 1 / 0, class token
TruncatedNormal(0.02), convolutions PyTorch's default.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import TruncatedNormal, initializer

from ..errors import DropCovError
from ._registry import ModelSpec
from .conv_tokens import VisualTokens, token_grid
from .layers import DropPath
from .mgcrp_head import ClassTokenHead, MGCrPHead, linear
from .specs import VIT_ARCH_FIELDS, ViTArch

LAYER_NORM_EPS = 1e-5
VIT_HEADS = ("dropcov", "class_token")


def sinusoid_table(positions: int, dim: int) -> np.ndarray:
    """Fixed position table ``(1, positions, dim)`` float32.

    ``P[p, j] = sin(p / 10000^(2 floor(j/2) / dim))`` for even ``j``, ``cos(...)`` for odd ``j``
    (the Transformer's encoding, as the authors' ``get_sinusoid_encoding``).
    """
    position = np.arange(positions, dtype=np.float64)[:, None]
    exponent = 2 * (np.arange(dim) // 2) / dim
    angle = position / np.power(10000.0, exponent)[None, :]
    table = np.where(np.arange(dim) % 2 == 0, np.sin(angle), np.cos(angle))
    return table[None].astype(np.float32)


def layer_norm(dim: int) -> nn.LayerNorm:
    """LayerNorm over the last axis with PyTorch's eps 1e-5 (MindSpore's default is 1e-7)."""
    return nn.LayerNorm((dim,), epsilon=LAYER_NORM_EPS)


class Attention(nn.Cell):
    """Multi-head self-attention: ``softmax(q k^T / sqrt(D/h)) v`` per head, then ``proj``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = linear(dim, 3 * dim, has_bias=False)
        self.proj = linear(dim, dim)

    def construct(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = ops.softmax(ops.matmul(q * self.scale, k.swapaxes(-2, -1)), axis=-1)
        return self.proj(ops.matmul(attention, v).transpose(0, 2, 1, 3).reshape(batch, tokens, dim))


class Mlp(nn.Cell):
    """``fc2(GELU(fc1(x)))`` with the exact (erf) GELU, hidden width ``int(dim * mlp_ratio)``."""

    def __init__(self, dim: int, hidden: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.fc1 = linear(dim, hidden)
        self.act = nn.GELU(approximate=False)
        self.fc2 = linear(hidden, dim)
        self.drop = nn.Dropout(p=drop_rate) if drop_rate > 0 else nn.Identity()

    def construct(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Cell):
    """Pre-norm transformer block with stochastic depth on both residual branches."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path_rate: float = 0.0,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.attn = Attention(dim, num_heads)
        self.proj_drop = nn.Dropout(p=drop_rate) if drop_rate > 0 else nn.Identity()
        self.drop_path = DropPath(drop_path_rate)
        self.norm2 = layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop_rate)

    def construct(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.proj_drop(self.attn(self.norm1(x))))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic-depth rate of each block: ``linspace(0, rate, depth)`` (timm/DeiT's schedule)."""
    return [float(r) for r in np.linspace(0.0, rate, depth)] if depth > 1 else [0.0] * depth


class VisionTransformer(nn.Cell):
    """Convolutional tokens + class token + fixed positions -> ``depth`` blocks -> ``norm`` -> head.

    Args:
        spec: embed width, depth, heads, MLP ratio, DropCov head heads/width, stem width, and the head:
            ``'dropcov'`` (MGCrP, summed with the class-token classifier) or ``'class_token'``.
        num_classes: classifier outputs.
        image_size: square input side the position table is built for (224); smaller inputs use its
            first rows. Decides the stem's last pooling (see :mod:`src.models.conv_tokens`).
        drop_path_rate: stochastic depth of the last block (``linspace(0, rate, depth)``; 0.1 in the
            authors' recipe, 0 by default).
        drop_rate: dropout after attention/MLP projections and on the embedded tokens (0 as theirs).
        token_drop, cov_drop: DropCov's token-mask rate (0.2) and the covariance dropout (0.5).
    """

    def __init__(self, spec: ViTArch, num_classes: int = 1000, image_size: int = 224, drop_path_rate: float = 0.0,
                 drop_rate: float = 0.0, token_drop: float = 0.2, cov_drop: float = 0.5) -> None:
        super().__init__()
        head = spec.head
        validate_vit_options(spec, num_classes, head, image_size, drop_path_rate, drop_rate, token_drop, cov_drop)
        self.num_classes = num_classes
        self.num_features = spec.embed_dim
        self.visual_tokens = VisualTokens(image_size, spec.embed_dim, spec.token_dim)
        self.cls_token = Parameter(initializer(TruncatedNormal(0.02), (1, 1, spec.embed_dim)), name="cls_token")
        positions = token_grid(image_size) ** 2 + 1
        self.pos_embed = Tensor(sinusoid_table(positions, spec.embed_dim))
        self.pos_drop = nn.Dropout(p=drop_rate) if drop_rate > 0 else nn.Identity()
        self.blocks = nn.CellList([Block(spec.embed_dim, spec.num_heads, spec.mlp_ratio, rate, drop_rate)
                                   for rate in drop_path_rates(drop_path_rate, spec.depth)])
        self.norm = layer_norm(spec.embed_dim)
        if head == "dropcov":
            self.classifier = MGCrPHead(spec.embed_dim, num_classes, spec.wr_heads, spec.wr_dim, token_drop,
                                        cov_drop)
        else:
            self.classifier = ClassTokenHead(spec.embed_dim, num_classes)
        self.set_train(False)  # consistent phase and flag (see src.models.resnet.ResNet)

    def no_weight_decay(self) -> set[str]:
        """Parameters exempt from weight decay whatever their shape (timm's method): the class token (the
        position table is fixed, not a parameter)."""
        return {"cls_token"}

    def forward_features(self, x: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` -> normalised tokens ``(B, 1 + N, D)`` (class token first)."""
        x = self.visual_tokens(x)
        batch, tokens = x.shape[0], x.shape[1]
        cls_token = ops.broadcast_to(ops.cast(self.cls_token, x.dtype), (batch, 1, x.shape[2]))
        x = ops.cat((cls_token, x), 1) + ops.cast(self.pos_embed[:, :tokens + 1], x.dtype)
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, tokens: Tensor) -> Tensor:
        """Normalised tokens -> logits ``(B, num_classes)``."""
        return self.classifier(tokens)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def validate_vit_options(spec: ViTArch, num_classes: int, head: str, image_size: int, drop_path_rate: float,
                         drop_rate: float, token_drop: float, cov_drop: float) -> None:
    """Raise :class:`DropCovError` naming the first option out of range."""
    if head not in VIT_HEADS:
        raise DropCovError(f"head={head!r} is not supported by the vision transformers: choose one of "
                           f"{', '.join(VIT_HEADS)}")
    for key, value, low in (("num_classes", num_classes, 1), ("image_size", image_size, 32),
                            ("embed_dim", spec.embed_dim, 1), ("depth", spec.depth, 1),
                            ("num_heads", spec.num_heads, 1), ("wr_heads", spec.wr_heads, 1),
                            ("wr_dim", spec.wr_dim, 1), ("token_dim", spec.token_dim, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise DropCovError(f"{key}={value!r} is not supported: it must be an integer >= {low}")
    if spec.embed_dim % spec.num_heads:
        raise DropCovError(f"embed_dim={spec.embed_dim} is not divisible by num_heads={spec.num_heads}")
    if not spec.mlp_ratio > 0:
        raise DropCovError(f"mlp_ratio={spec.mlp_ratio!r} is not supported: it must be > 0")
    for key, value in (("drop_path_rate", drop_path_rate), ("drop_rate", drop_rate), ("token_drop", token_drop),
                       ("cov_drop", cov_drop)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise DropCovError(f"{key}={value!r} is not supported: it must be in [0, 1)")


def build_vit(spec: ModelSpec, num_classes: int = 1000, image_size: int = 224, drop_path_rate: float = 0.0,
              drop_rate: float = 0.0, token_drop: float = 0.2, cov_drop: float = 0.5,
              **architecture: float) -> VisionTransformer:
    """The builder of every registered transformer (:func:`src.models.create_model` calls it).

    ``architecture`` may override the fields of :class:`src.models.specs.ViTArch` named in
    :data:`src.models.specs.VIT_ARCH_FIELDS` (``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``,
    ``wr_heads``, ``wr_dim``, ``token_dim``), e.g. for a small model that trains on a CPU.
    """
    unknown = sorted(set(architecture) - set(VIT_ARCH_FIELDS))
    if unknown:
        raise DropCovError(f"{spec.name}: unknown option(s) {', '.join(unknown)}; architecture options are "
                           f"{', '.join(VIT_ARCH_FIELDS)}")
    return VisionTransformer(replace(spec.arch, **architecture), num_classes=num_classes, image_size=image_size,
                             drop_path_rate=drop_path_rate, drop_rate=drop_rate, token_drop=token_drop,
                             cov_drop=cov_drop)
