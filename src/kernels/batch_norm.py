"""Evaluation-mode batch norm in one pass (``csrc/elementwise_kernels.h``), a drop-in for ``nn.BatchNorm2d`` on CPU.

In evaluation mode a batch norm is a per-channel affine map, ``y = x * scale + shift`` with
``scale = gamma / sqrt(moving_variance + eps)`` and ``shift = beta - moving_mean * scale``. MindSpore's
CPU kernel runs it through oneDNN's batch norm on the plain NCHW layout, whose generic implementation
takes several times as long as one pass over ``x``: about 12% of a ResNet-50 evaluation forward at
batch 8. :class:`InferenceBatchNorm2d` runs that pass in our kernel and leaves training to MindSpore's
own batch norm (batch statistics, moving-average updates, gradients).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from mindspore import Tensor, nn, ops

from src.errors import DropCovError


def can_replace_batch_norm(cell: nn.Cell) -> bool:
    """Whether ``cell`` is an ``nn.BatchNorm2d`` on NCHW that uses its moving statistics in evaluation mode."""
    return (type(cell) is nn.BatchNorm2d and getattr(cell, "format", "NCHW") == "NCHW"
            and cell.use_batch_statistics is None)


# out_shape / out_dtype of the op: plain functions of exactly its inputs (MindSpore may compile them)
def _output_shape(x: Sequence[int], gamma: Sequence[int], beta: Sequence[int], mean: Sequence[int],
                  variance: Sequence[int], eps: Sequence[int]) -> Sequence[int]:
    return x


def _output_type(x, gamma, beta, mean, variance, eps):
    return x


class InferenceBatchNorm2d(nn.Cell):
    """``batch_norm`` (kept as a child: same Parameters, names and training behaviour); in evaluation mode
    its forward is one scale-and-shift pass of our kernel, with the batch norm's own ``eps``."""

    def __init__(self, batch_norm: nn.BatchNorm2d, library: str) -> None:
        super().__init__(auto_prefix=False)  # the batch norm's Parameters keep their names
        if not can_replace_batch_norm(batch_norm):
            raise DropCovError(f"InferenceBatchNorm2d supports affine NCHW BatchNorm2d with moving statistics; "
                               f"got {batch_norm!r}")
        self.batch_norm = batch_norm
        self.eps = Tensor(np.array([batch_norm.eps], np.float32))
        self.inference = ops.Custom(f"{library}:dropcov_batch_norm_inference", func_type="aot",
                                    out_shape=_output_shape, out_dtype=_output_type)

    def construct(self, x: Tensor) -> Tensor:
        if self.training:
            return self.batch_norm(x)
        bn = self.batch_norm
        return self.inference(x, bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance, self.eps)

    def extend_repr(self) -> str:
        return f"num_features={self.batch_norm.num_features}, eps={self.batch_norm.eps}, evaluation=one pass"

