"""Parameter and multiply-add counts of the vision transformers (:mod:`src.models.vit`), analytically.

What is counted, per image at inference:

- parameters: the trainable ones (convolutions, LayerNorm/BatchNorm affine, linears, class token);
  the position table is a constant and BatchNorm moving statistics are not trained.
- multiply-adds: every convolution (``Hout Wout Cout Cin k^2``) and linear layer (``tokens x in x
  out``); the two attention products per block (``q k^T`` and ``A v``: ``2 T^2 D``, ``T = N + 1``
  tokens), reported apart as ``attention_macs``; the DropCov head's projection (the q, k two thirds
  of ``wr`` this network multiplies) and cross-covariances (``h N w^2``). Normalisation, activations,
  pooling, softmax and residual additions are not counted.

The authors' README counts (DeiT-S + DropCov 5.5 G, T2T-ViT-14 + DropCov 5.4 G) come from ``thop``
in their ``main.py``, which only sees ``nn.Conv2d``/``nn.Linear`` modules (and norms/pools): the
attention products are functional calls it cannot see. ``gmacs_without_attention`` is that count.
"""
from __future__ import annotations

from dataclasses import replace

from ..errors import DropCovError
from ._registry import model_spec
from .conv_tokens import (
    BOTTLENECK,
    GROWTH,
    LAYERS_PER_BLOCK,
    TRANSITION_CHANNELS,
    last_transition_pools,
    token_grid,
)
from .specs import VIT_ARCH_FIELDS, ViTArch

AUTHORS_TABLE: dict[str, tuple[float, float]] = {
    "deit_small_dropcov": (25.6, 5.5),
    "t2t_vit_14_dropcov": (24.9, 5.4),
}
"""(params M, GFLOPs) of the authors' README at 224x224, 1000 classes. Its DeiT-S (22.1 M, 4.6 G) and
T2T-ViT-14 (21.5 M, 5.2 G) baselines are the networks of the DeiT and T2T-ViT papers (patch and
tokens-to-token embeddings), not this repository's ``_cls`` baselines (these backbones with the
class-token head), so they are not compared here."""


def _stem(spec: ViTArch, image_size: int) -> tuple[int, int]:
    """(parameters, multiply-adds) of the DenseNet-style token stem."""
    params = spec.token_dim * 3 * 9 + spec.token_dim
    macs = image_size * image_size * spec.token_dim * 3 * 9
    side = (image_size + 1) // 2  # max-pool 3x3/2 pad 1
    channels = spec.token_dim
    for index in range(3):
        for layer in range(LAYERS_PER_BLOCK):
            in_channels = channels + layer * GROWTH
            params += BOTTLENECK * GROWTH * in_channels + GROWTH * BOTTLENECK * GROWTH * 9
            macs += side * side * (BOTTLENECK * GROWTH * in_channels + GROWTH * BOTTLENECK * GROWTH * 9)
        channels += LAYERS_PER_BLOCK * GROWTH
        params += 2 * channels + channels * TRANSITION_CHANNELS
        macs += side * side * channels * TRANSITION_CHANNELS
        if index < 2 or last_transition_pools(image_size):
            side //= 2
        channels = TRANSITION_CHANNELS
    params += TRANSITION_CHANNELS * spec.embed_dim + spec.embed_dim
    macs += side * side * TRANSITION_CHANNELS * spec.embed_dim
    return params, macs


def describe_vit(name: str, image_size: int = 224, num_classes: int = 1000, **architecture) -> dict:
    """Counts for ``create_model(name, num_classes=..., image_size=..., **architecture)``.

    ``architecture`` takes the :class:`src.models.specs.ViTArch` overrides; the regularisation options
    (``drop_path_rate``, ``token_drop``, ...) change no count and are accepted. Returns the keys of
    :func:`src.models.info.describe_model` plus ``attention_macs`` and ``gmacs_without_attention``.
    """
    registered = model_spec(name)
    if registered.family != "vit":
        raise DropCovError(f"describe_vit counts the transformers, not {name!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
        raise DropCovError(f"image_size={image_size!r} is not supported: it must be an integer >= 32")
    spec = replace(registered.arch, **{key: value for key, value in architecture.items() if key in VIT_ARCH_FIELDS})
    dim, hidden = spec.embed_dim, int(spec.embed_dim * spec.mlp_ratio)
    grid = token_grid(image_size)
    tokens = grid * grid + 1
    params, macs = _stem(spec, image_size)
    params += dim  # class token
    block_params = 4 * dim + 4 * dim * dim + dim + 2 * dim * hidden + hidden + dim
    params += spec.depth * block_params + 2 * dim
    macs += spec.depth * tokens * (4 * dim * dim + 2 * dim * hidden)
    attention = spec.depth * 2 * tokens * tokens * dim
    dropcov = spec.head == "dropcov"
    params += dim * num_classes + num_classes
    macs += dim * num_classes
    if dropcov:
        heads, width = spec.wr_heads, spec.wr_dim
        params += 3 * heads * width * dim + heads * width * width * num_classes + num_classes
        macs += (tokens - 1) * dim * 2 * heads * width + heads * (tokens - 1) * width * width
        macs += heads * width * width * num_classes
    return {
        "net_name": name, "head": "dropcov" if dropcov else "class_token", "cov_dim": None, "post_norm": None,
        "class_num": num_classes, "image_size": image_size, "arch_style": None, "feature_size": grid,
        "params": params, "params_m": params / 1e6, "macs": macs + attention, "gmacs": (macs + attention) / 1e9,
        "attention_macs": attention, "gmacs_without_attention": macs / 1e9,
    }
