"""The authors' PyTorch DropCov vision transformers, rewritten for the test suite (PyTorch is test-only).

What it reproduces (the network behind the authors' DeiT-S / T2T-ViT-14 + DropCov checkpoints, built
with timm 0.4.12 on PyTorch 1.8), with their state-dict keys:

- ``visual_tokens.tokens``: the SoT DenseNet-style token stem. ``stem`` = Conv2d(3, 64, 3, pad 1, bias)
  -> MaxPool(3, 2, pad 1); ``stage`` = three (dense block of 6 layers, growth 16, bottleneck 2 x 16)
  + transition (BatchNorm -> conv1x1 -> AvgPool 2x2, the last pool left out when
  ``img_size // 112 == 1``); ``transition`` = Conv2d(128, embed_dim, 1, bias). timm 0.4.12's
  ``DenseBlock`` passes ``norm_layer=nn.ReLU`` to its layers by default, so a dense layer is
  ReLU -> conv1x1 -> ReLU -> conv3x3 (no BatchNorm: ``norm1``/``norm2`` have no parameters).
- ``cls_token``; ``pos_embed``, the fixed sinusoid table of 1 + tokens rows (a parameter with
  ``requires_grad=False``, so it is in the state dict); pre-norm blocks (LayerNorm eps 1e-5, attention
  without qkv bias, scale head_dim^-1/2, exact GELU MLP, drop path); the final LayerNorm ``norm``.
- ``classifier``: with ``representation=True`` (DropCov, ``fusion_type='sum_fc'``) the class token goes
  to ``cls_fc`` and the word tokens to ``representation.wr`` (Linear(D, 3 h w), no bias; the first
  two thirds are q and k, the last third is unused), q and k are multiplied by one token mask
  (``Dropout2d(0.2)`` on a ``(B h, N, w)`` tensor of ones: PyTorch 1.8 drops whole tokens, one draw
  per (sample, head, token)), per head ``(1/N) qc^T kc`` with qc, kc the q, k minus the mean of all
  their entries (``adaptive_avg_pool2d`` of a 3-D tensor pools both axes), Dropout(0.5), ``visual_fc``;
  the two logits are summed. With ``representation=False`` only ``cls_fc`` on the class token (the
  ``re_type=None`` path of the authors' classifier).

Written from the authors' description and code, without timm.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from .random_weights import seeded_draws

#: embed_dim, depth, num_heads, mlp_ratio, wr_dim of the authors' networks.
ARCHITECTURES = {
    "deit_small": dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0, wr_dim=24),
    "t2t_vit_14": dict(embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0, wr_dim=24),
}


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """(1, positions, dim): angle pos / 10000^(2 floor(j/2) / dim); sin on even j, cos on odd j."""
    table = np.array([[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for pos in range(positions)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.FloatTensor(table).unsqueeze(0)


class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int, bottleneck: int):
        super().__init__()
        self.norm1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, bottleneck * growth, 1, bias=False)
        self.norm2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bottleneck * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv2(self.norm2(self.conv1(self.norm1(torch.cat(features, 1)))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, in_channels: int, growth: int = 16, bottleneck: int = 2):
        super().__init__()
        for index in range(layers):
            self.add_module(f"denselayer{index + 1}", DenseLayer(in_channels + index * growth, growth, bottleneck))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, pool: bool):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(in_channels))
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, 1, bias=False))
        if pool:
            self.add_module("pool", nn.AvgPool2d(2, 2))


class DenseTokens(nn.Module):
    def __init__(self, img_size: int, embed_dim: int, token_dim: int = 64):
        super().__init__()
        last_pool = img_size // 112 != 1
        self.stem = nn.Sequential(nn.Conv2d(3, token_dim, 3, padding=1), nn.MaxPool2d(3, 2, padding=1))
        self.stage = nn.Sequential(
            DenseBlock(6, token_dim), Transition(token_dim + 96, 128, True),
            DenseBlock(6, 128), Transition(224, 128, True),
            DenseBlock(6, 128), Transition(224, 128, last_pool))
        self.transition = nn.Conv2d(128, embed_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transition(self.stage(self.stem(x)))
        return x.flatten(2).transpose(1, 2)


class VisualTokens(nn.Module):
    def __init__(self, img_size: int, embed_dim: int):
        super().__init__()
        self.tokens = DenseTokens(img_size, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype)).floor()
    return x.div(keep) * mask


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path_rate: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


def token_mask(batch_heads: int, tokens: int, rate: float) -> torch.Tensor:
    """PyTorch 1.8's Dropout2d on ones(B h, N, w): (B h, N, 1) of 0 or 1/(1-rate), one draw per token."""
    return torch.empty(batch_heads, tokens, 1).bernoulli_(1.0 - rate) / (1.0 - rate)


def cross_covariance(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(BH, N, w) x2 -> (BH, w, w): (1/N) (q - mean(q))^T (k - mean(k)), means over all N*w entries."""
    q = q - q.mean(dim=(1, 2), keepdim=True)
    k = k - k.mean(dim=(1, 2), keepdim=True)
    return q.transpose(1, 2).bmm(k) / q.shape[1]


class MultiHeadPooling(nn.Module):
    def __init__(self, dim: int, num_heads: int, wr_dim: int, token_drop: float = 0.2, cov_drop: float = 0.5):
        super().__init__()
        self.num_heads, self.wr_dim = num_heads, wr_dim
        self.wr = nn.Linear(dim, wr_dim * num_heads * 3, bias=False)
        self.token_drop, self.cov_drop = token_drop, cov_drop
        self.mask: torch.Tensor | None = None  # tests may fix the token mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qk = self.wr(x).reshape(batch, tokens, 3, self.num_heads, self.wr_dim).permute(2, 0, 3, 1, 4)
        q = qk[0].reshape(batch * self.num_heads, tokens, self.wr_dim)
        k = qk[1].reshape(batch * self.num_heads, tokens, self.wr_dim)
        if self.training:
            mask = self.mask if self.mask is not None else token_mask(batch * self.num_heads, tokens, self.token_drop)
            q, k = q * mask, k * mask
        cov = functional.dropout(cross_covariance(q, k), self.cov_drop, self.training)
        return cov.reshape(batch, -1)


class Classifier(nn.Module):
    def __init__(self, num_classes: int, dim: int, num_heads: int, wr_dim: int, representation: bool):
        super().__init__()
        self.use_representation = representation
        if representation:
            self.representation = MultiHeadPooling(dim, num_heads, wr_dim)
            self.visual_fc = nn.Linear(num_heads * wr_dim ** 2, num_classes)
        self.cls_fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.cls_fc(x[:, 0])
        if self.use_representation:
            logits = logits + self.visual_fc(self.representation(x[:, 1:]))
        return logits


class Vit(nn.Module):
    def __init__(self, img_size: int = 224, num_classes: int = 1000, embed_dim: int = 384, depth: int = 12,
                 num_heads: int = 6, mlp_ratio: float = 4.0, wr_dim: int = 24, representation: bool = True,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self.visual_tokens = VisualTokens(img_size, embed_dim)
        rates = [float(r) for r in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, rates[i]) for i in range(depth)])
        self.classifier = Classifier(num_classes, embed_dim, num_heads, wr_dim, representation)
        grid = (img_size + 1) // 2 // 4 // (2 if img_size // 112 != 1 else 1)  # 14 at 224 and 112 (as their 196)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sinusoid_table(grid * grid + 1, embed_dim), requires_grad=False)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.visual_tokens(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.norm(x))


def build_reference(name: str, num_classes: int = 1000, img_size: int = 224, representation: bool = True,
                    **overrides) -> Vit:
    """``deit_small`` or ``t2t_vit_14`` (with the DropCov head unless ``representation=False``)."""
    return Vit(img_size=img_size, num_classes=num_classes, representation=representation,
               **{**ARCHITECTURES[name], **overrides})


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights that keep activations O(1): He-normal convs, N(0, 1/fan_in) linears, non-trivial
    LayerNorm/BatchNorm affine parameters and BatchNorm statistics, a random class token."""
    normal, uniform = seeded_draws(seed)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(normal(module.weight.shape, math.sqrt(2.0 / module.weight[0].numel())))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.1))
            elif isinstance(module, nn.Linear):
                module.weight.copy_(normal(module.weight.shape, 1.0 / math.sqrt(module.in_features)))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.1))
            elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
                module.weight.copy_(uniform(module.weight.shape, 0.5, 1.5))
                module.bias.copy_(normal(module.bias.shape, 0.2))
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.copy_(normal(module.running_mean.shape, 0.2))
                    module.running_var.copy_(uniform(module.running_var.shape, 0.5, 2.0))
                    module.num_batches_tracked.fill_(1234)
        if hasattr(model, "cls_token"):
            model.cls_token.copy_(normal(model.cls_token.shape, 0.5))
    return model
