"""Classification heads on a ResNet's last feature map: DropCov (covariance pooling) and GAP.

Parameter names are fixed by the published checkpoints (``layer_reduce``, ``layer_reduce_bn``,
``fc``, ``eca_layer.conv``); the heads come out top-level because :class:`src.models.resnet.ResNet`
holds them with ``auto_prefix=False``.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn, ops

from ..errors import DropCovError
from .gcp import (
    adaptive_drop_rate,
    channel_dropout,
    covariance_pool,
    isqrt,
    upper_triangle,
    upper_triangle_index,
)
from .info import triangle_size
from .init import conv_initializer, dense_initializer, eca_initializer
from .specs import POST_NORMS


def batch_norm(channels: int, eps: float, momentum: float) -> nn.BatchNorm2d:
    """BatchNorm2d with gamma 1, beta 0, MindSpore momentum convention ``moving = m*moving + (1-m)*batch``."""
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum, gamma_init="ones", beta_init="zeros",
                          moving_mean_init="zeros", moving_var_init="ones")


def classifier(in_features: int, num_classes: int) -> nn.Dense:
    """The ``fc`` layer: weight TruncatedNormal(sigma 0.01) cut at 2 sigma, bias 0, as the checkpoints were trained."""
    return nn.Dense(in_features, num_classes, weight_init=dense_initializer(), bias_init="zeros",
                    has_bias=True)


class ChannelWeights(nn.Cell):
    """ECA-style channel weights with a softmax: ``y = softmax_c(conv1d_c(GAP(X)))``.

    ``GAP(X)`` is ``(B, d)``; a 1-D convolution (1 -> 1 channel, kernel 3, zero padding 1, no bias)
    slides along the channel axis; the softmax runs over channels, so each ``y_b`` sums to 1.
    Held as ``eca_layer`` (weight ``eca_layer.conv.weight`` of shape ``(1, 1, 1, 3)``), drawn Normal(0.01) as
    MindSpore 1.9's Conv1d default did (``eca_init``).
    """

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, pad_mode="pad", padding=(kernel_size - 1) // 2,
                              has_bias=False, weight_init=eca_initializer())

    def construct(self, x: Tensor) -> Tensor:
        """``(B, d, H, W)`` -> ``(B, d)`` float32 weights."""
        pooled = ops.cast(x, ms.float32).mean(axis=(2, 3))
        scores = self.conv(pooled.expand_dims(1)).squeeze(1)
        return ops.softmax(ops.cast(scores, ms.float32), axis=-1)


class CovarianceRepresentation(nn.Cell):
    """``(B, d, H, W)`` -> ``(B, d(d+1)/2)``: covariance, optional iSQRT, upper triangle, in float32.

    Parameter-free; the head marks it ``to_float(float32)``, and every function casts to float32
    itself, so the result stays float32 even when AMP (O2/O3) re-flags the whole network float16.
    """

    def __init__(self, cov_dim: int, post_norm: str = "none", isqrt_iters: int = 5) -> None:
        super().__init__()
        self.use_isqrt = post_norm == "isqrt"
        self.isqrt_iters = isqrt_iters
        self.triangle_index = upper_triangle_index(cov_dim)

    def construct(self, x: Tensor) -> Tensor:
        sigma = covariance_pool(x)
        if self.use_isqrt:
            sigma = isqrt(sigma, self.isqrt_iters)
        return upper_triangle(sigma, self.triangle_index)


class DropCovHead(nn.Cell):
    """DropCov head: 1x1 reduction, adaptive channel dropout (training), covariance pooling, ``fc``.

    Forward, with ``X = ReLU(BN(conv1x1(C5)))`` of shape ``(B, d, H, W)``:

    - training (and ``adaptive_dropout``): ``y = eca_layer(X)``; ``X' = X*y + X``;
      ``p = adaptive_drop_rate(y, rowsum(Cov(X')))``; ``Z = channel_dropout(X', p)``; pool ``Z``.
    - evaluation (``self.training`` False) or ``adaptive_dropout=False``: pool ``X`` directly.

    Pooling is ``Cov`` -> (``isqrt`` if ``post_norm='isqrt'``) -> upper triangle, in float32; then
    ``fc`` (``d(d+1)/2 -> num_classes``).

    Args:
        in_channels: channels of the backbone's last map (512 * block expansion).
        num_classes: classifier outputs.
        cov_dim: ``d``, channels after ``layer_reduce`` (128 in the published checkpoints).
        post_norm: ``'none'`` (published checkpoints) or ``'isqrt'``.
        isqrt_iters: Newton–Schulz iterations for ``'isqrt'``.
        adaptive_dropout: False disables the ECA/dropout step in training too (deterministic head).
        bn_eps, bn_momentum: ``layer_reduce_bn`` settings (1e-4 / 0.9 for the MindSpore checkpoints).
    """

    def __init__(self, in_channels: int, num_classes: int, cov_dim: int = 128, post_norm: str = "none",
                 isqrt_iters: int = 5, adaptive_dropout: bool = True, bn_eps: float = 1e-4,
                 bn_momentum: float = 0.9) -> None:
        super().__init__()
        if post_norm not in POST_NORMS:
            raise DropCovError(f"post_norm={post_norm!r} is not supported: choose one of {', '.join(POST_NORMS)}")
        self.cov_dim = cov_dim
        self.adaptive_dropout = bool(adaptive_dropout)
        self.layer_reduce = nn.Conv2d(in_channels, cov_dim, kernel_size=1, stride=1, pad_mode="pad",
                                      padding=0, has_bias=False, weight_init=conv_initializer())
        self.layer_reduce_bn = batch_norm(cov_dim, bn_eps, bn_momentum)
        self.relu = nn.ReLU()
        self.fc = classifier(triangle_size(cov_dim), num_classes)
        self.eca_layer = ChannelWeights()
        self.representation = CovarianceRepresentation(cov_dim, post_norm, isqrt_iters).to_float(ms.float32)
        self.set_train(False)  # a new Cell has phase 'train' with training False: keep them consistent

    def conv_batch_norm_chains(self) -> tuple[tuple[str, str, str | None], ...]:
        """(convolution, batch norm, ReLU) of :meth:`reduce`, each output read only by the next cell."""
        return (("layer_reduce", "layer_reduce_bn", "relu"),)

    def reduce(self, x: Tensor) -> Tensor:
        """``(B, C5, H, W)`` -> ``X = ReLU(BN(conv1x1(x)))`` of shape ``(B, d, H, W)``."""
        return self.relu(self.layer_reduce_bn(self.layer_reduce(x)))

    def adaptive_channel_dropout(self, x: Tensor) -> Tensor:
        """``X -> channel_dropout(X*y + X, p)`` with ``y`` from ``eca_layer`` and the adaptive rate ``p``."""
        weights = self.eca_layer(x)
        reweighted = x * ops.cast(weights, x.dtype).reshape(x.shape[0], x.shape[1], 1, 1) + x
        row_sums = covariance_pool(reweighted).sum(axis=2)
        rate = adaptive_drop_rate(weights, row_sums)
        return channel_dropout(reweighted, rate)

    def construct(self, x: Tensor) -> Tensor:
        """``(B, C5, H, W)`` -> logits ``(B, num_classes)``."""
        x = self.reduce(x)
        if self.training and self.adaptive_dropout:
            x = self.adaptive_channel_dropout(x)
        return self.fc(self.representation(x))


class GlobalAvgPoolHead(nn.Cell):
    """Standard ResNet head: global average pooling then ``fc`` (``C5 -> num_classes``)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = classifier(in_channels, num_classes)
        self.set_train(False)

    def construct(self, x: Tensor) -> Tensor:
        """``(B, C5, H, W)`` -> logits ``(B, num_classes)``."""
        return self.fc(x.mean(axis=(2, 3)))
