"""The authors' PyTorch DropCov ResNets, rewritten for the test suite (PyTorch is a test-only dependency).

What it reproduces (the network behind the authors' PyTorch checkpoints, ResNet-34/50 + DropCov):

- torchvision ResNet layout and parameter names: ``conv1``, ``bn1``, ``layerL.i.conv1/bn1/conv2/bn2``
  (``conv3/bn3`` for bottlenecks), ``layerL.i.downsample.0/1``; symmetric padding in every conv and in
  the stem max-pool (padding 1); BatchNorm eps 1e-5, momentum 0.1; the bottleneck stride on the 3x3 conv.
- layer4 with stride 1 (output stride 16).
- DropCov head: ``layer_reduce`` conv1x1 (C5 -> cov_dim) -> ``layer_reduce_bn`` -> ReLU -> X; in training
  only, ``eca_layer`` (global average pool -> Conv1d(1, 1, 3, pad 1, no bias) along channels ->
  softmax over channels, X' = X*y + X) and channel dropout with rate
  p = clip(1 - 10/log2(d) * mean_b cos(y_b, rowsum Cov(X')_b), 0, 1); then the covariance
  (spatial mean removed, 1/N X X^T), its upper triangle (i <= j, row-major) and ``fc``.

Module registration order follows the authors' code (``eca_layer`` before ``layer_reduce``), so the
state dict keys come in the order of their checkpoints.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from .random_weights import seeded_draws

BLOCKS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}


class BasicBlock(nn.Module):
    """conv3x3(stride) -> bn1 -> ReLU -> conv3x3 -> bn2, plus the shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """conv1x1 -> bn1 -> ReLU -> conv3x3(stride) -> bn2 -> ReLU -> conv1x1 -> bn3, plus shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ChannelAttention(nn.Module):
    """ECA with a softmax: y = softmax_c(conv1d_k3(mean_hw(X))) of shape (B, C, 1, 1)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = x.mean(dim=(2, 3))                         # (B, C)
        y = self.conv(pooled.unsqueeze(1)).squeeze(1)       # (B, C)
        y = torch.softmax(y, dim=1)[:, :, None, None]       # (B, C, 1, 1)
        return x * y + x, y


def covariance_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, d, H, W) -> (B, d, d): Cov = (1/N) Xc Xc^T with Xc = X minus its per-channel spatial mean."""
    batch, channels, height, width = x.shape
    centred = (x - x.mean(dim=(2, 3), keepdim=True)).reshape(batch, channels, height * width)
    return centred.bmm(centred.transpose(1, 2)) / (height * width)


def upper_triangle(cov: torch.Tensor) -> torch.Tensor:
    """(B, d, d) -> (B, d(d+1)/2): entries with i <= j, row-major (i outer)."""
    rows, cols = torch.triu_indices(cov.shape[1], cov.shape[2])
    return cov[:, rows, cols]


def adaptive_drop_rate(x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """p = clip(1 - (10 / log2 d) * mean_b cos(y_b, rowsum(Cov(X)_b)), 0, 1), a 0-d tensor (no gradient)."""
    with torch.no_grad():
        channels = x.shape[1]
        row_sums = covariance_pool(x).sum(dim=2)                                   # (B, d)
        weights = attention.flatten(1)                                             # (B, d)
        cosine = (weights * row_sums).sum(dim=1) / (weights.norm(dim=1) * row_sums.norm(dim=1))
        return torch.clamp(1.0 - (10.0 / math.log2(channels)) * cosine.mean(), 0.0, 1.0)


class DropCovResNet(nn.Module):
    """The authors' PyTorch ResNet + DropCov (layer4 stride 1, covariance head of width cov_dim)."""

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], num_classes: int = 1000,
                 cov_dim: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.in_channels = 64
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=1)
        self.eca_layer = ChannelAttention()
        self.layer_reduce = nn.Conv2d(512 * block.expansion, cov_dim, 1, bias=False)
        self.layer_reduce_bn = nn.BatchNorm2d(cov_dim)
        self.fc = nn.Linear(cov_dim * (cov_dim + 1) // 2, num_classes)

    def _make_layer(self, block: type[nn.Module], width: int, depth: int, stride: int) -> nn.Sequential:
        out_channels = width * block.expansion
        downsample = None
        if stride != 1 or self.in_channels != out_channels:
            downsample = nn.Sequential(nn.Conv2d(self.in_channels, out_channels, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out_channels))
        blocks = [block(self.in_channels, width, stride, downsample)]
        self.in_channels = out_channels
        blocks += [block(out_channels, width, 1, None) for _ in range(depth - 1)]
        return nn.Sequential(*blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.relu(self.layer_reduce_bn(self.layer_reduce(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        if self.training:
            x, attention = self.eca_layer(x)
            x = functional.dropout2d(x, p=float(adaptive_drop_rate(x, attention)), training=True)
        return self.fc(upper_triangle(covariance_pool(x)))


def build_reference(net_name: str, num_classes: int = 1000, cov_dim: int = 256) -> DropCovResNet:
    """The reference network for resnet18/34/50/101/152."""
    kind, layers = BLOCKS[net_name]
    block = BasicBlock if kind == "basic" else Bottleneck
    return DropCovResNet(block, layers, num_classes=num_classes, cov_dim=cov_dim)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights that keep activations O(1), and non-trivial BatchNorm parameters and statistics.

    Convs: He-normal (fan_in); BN: gamma ~ U(0.5, 1.5), beta ~ N(0, 0.2), running_mean ~ N(0, 0.2),
    running_var ~ U(0.5, 2); ECA conv and fc: N(0, 0.1) / N(0, 1/sqrt(fan_in)), fc bias ~ N(0, 0.1).
    """
    normal, uniform = seeded_draws(seed)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(normal(module.weight.shape, math.sqrt(2.0 / fan_in)))
            elif isinstance(module, nn.Conv1d):
                module.weight.copy_(normal(module.weight.shape, 0.5))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(uniform(module.weight.shape, 0.5, 1.5))
                module.bias.copy_(normal(module.bias.shape, 0.2))
                module.running_mean.copy_(normal(module.running_mean.shape, 0.2))
                module.running_var.copy_(uniform(module.running_var.shape, 0.5, 2.0))
                module.num_batches_tracked.fill_(1234)
            elif isinstance(module, nn.Linear):
                module.weight.copy_(normal(module.weight.shape, 1.0 / math.sqrt(module.in_features)))
                module.bias.copy_(normal(module.bias.shape, 0.1))
    return model
