"""A convolution, the batch norm after it and a ReLU as one oneDNN kernel in evaluation mode.

In evaluation a batch norm is the per-channel map ``y = x * scale + shift`` (:mod:`src.kernels.batch_norm`);
oneDNN applies it, and a ReLU, to each output of a convolution as it writes it (post-ops), so the
activation is written once instead of three times. :class:`OneDNNConvBatchNorm` takes the place of the
convolution and :class:`EvaluationIdentity` those of the batch norm and the ReLU, whose work it does;
training runs all three as before. Which cells form such a chain is the network's own fact: a cell lists
them in ``conv_batch_norm_chains()`` (:func:`src.kernels.swap.fuse_conv_batch_norms` reads it).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from mindspore import Tensor, nn, ops

from src.errors import DropCovError

from .onednn_conv import OneDNNConv2d, output_shape_function


class OneDNNConvBatchNorm(nn.Cell):
    """``conv`` alone in training; in evaluation ``relu?(batch_norm(conv(x)))`` in one kernel.

    Holds ``conv`` and ``batch_norm`` as children without prefixing their Parameters, which keep their names;
    the batch norm is also the one its own slot still runs in training.
    """

    def __init__(self, conv: OneDNNConv2d, batch_norm: nn.BatchNorm2d, relu: bool, library: str) -> None:
        super().__init__(auto_prefix=False)
        if not isinstance(conv, OneDNNConv2d) or conv.one_dimensional:
            raise DropCovError(f"OneDNNConvBatchNorm folds a batch norm into a 2-D OneDNNConv2d; got {conv!r}")
        if type(batch_norm) is not nn.BatchNorm2d or batch_norm.num_features != conv.out_channels:
            raise DropCovError(f"OneDNNConvBatchNorm needs a BatchNorm2d over the convolution's "
                               f"{conv.out_channels} channels; got {batch_norm!r}")
        self.conv = conv
        self.batch_norm = batch_norm
        self.relu = bool(relu)
        self.eps = Tensor(np.array([batch_norm.eps], np.float32))
        # the convolution's config followed by the ReLU flag: see csrc/onednn_kernels.cc
        self.fused_config = Tensor(np.append(conv.kernel_config.asnumpy(), np.int64(self.relu)))
        self.fused = ops.Custom(f"{library}:dropcov_conv2d_batch_norm_inference", func_type="aot",
                                out_shape=_fused_output_shape(output_shape_function(conv)),
                                out_dtype=lambda x, w, config, gamma, beta, mean, variance, eps: x)

    def construct(self, x: Tensor) -> Tensor:
        if self.training:
            return self.conv(x)
        bn = self.batch_norm
        return self.fused(x, self.conv.weight, self.fused_config, bn.gamma, bn.beta, bn.moving_mean,
                          bn.moving_variance, self.eps)

    def extend_repr(self) -> str:
        return f"evaluation=convolution + batch norm{' + ReLU' if self.relu else ''} in one kernel"


def _fused_output_shape(convolution_shape: Callable) -> Callable:
    """``out_shape`` of the fused op: the convolution's, as a function of exactly the op's eight inputs."""

    def output_shape(x: Sequence[int], w: Sequence[int], config: Sequence[int], gamma: Sequence[int],
                     beta: Sequence[int], mean: Sequence[int], variance: Sequence[int],
                     eps: Sequence[int]) -> list[int]:
        return convolution_shape(x, w, config)

    return output_shape


class EvaluationIdentity(nn.Cell):
    """``cell`` in training; the identity in evaluation, where the convolution before it has done its work."""

    def __init__(self, cell: nn.Cell) -> None:
        super().__init__(auto_prefix=False)  # the cell's Parameters keep their names
        self.cell = cell

    def construct(self, x: Tensor) -> Tensor:
        if self.training:
            return self.cell(x)
        return x

    def extend_repr(self) -> str:
        return "evaluation=identity (folded into the convolution before it)"
