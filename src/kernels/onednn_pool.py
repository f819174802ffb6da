"""Padded max pooling on oneDNN (``csrc/onednn_pooling.h``) as a drop-in for ``nn.MaxPool2d`` on CPU.

MindSpore 2.10 computes a padded ``nn.MaxPool2d`` (the ResNet-18/34 stem pool, 3x3/2 with padding 1)
with ``MaxPool3DWithArgmax``, about 60 ms per training step for ResNet-18 at batch 8 on 2 cores;
oneDNN's max pooling does the same in a few ms. The forward kernel also returns oneDNN's workspace
(the argmax within each window, one byte per output) for the backward kernel. Gradients at tied
maxima go to the first maximum of the window, as in MindSpore.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common import dtype as mstype

from src.errors import DropCovError


def _pool_attributes(pool: nn.MaxPool2d) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
    """(kernel, stride, (pad_h, pad_w)) of a padded ``nn.MaxPool2d`` we can replace, else None."""
    if not (isinstance(pool, nn.MaxPool2d) and pool.use_pad) or pool.return_indices:
        return None
    attrs = pool.max_pool.attrs
    if attrs["ceil_mode"] or tuple(attrs["dilation"]) != (1, 1, 1) or attrs["ksize"][0] != 1:
        return None
    return tuple(attrs["ksize"][1:]), tuple(attrs["strides"][1:]), tuple(attrs["pads"][1:])


def can_replace_pool(cell: nn.Cell) -> bool:
    """Whether ``cell`` is a padded ``nn.MaxPool2d`` that :class:`OneDNNMaxPool2d` computes exactly."""
    attributes = _pool_attributes(cell)
    if attributes is None:
        return False
    (kernel_h, kernel_w), _, (pad_h, pad_w) = attributes
    return kernel_h * kernel_w < 256 and pad_h <= kernel_h // 2 and pad_w <= kernel_w // 2


class OneDNNMaxPool2d(nn.Cell):
    """``pool``'s max pooling (kernel, stride, symmetric padding; padding never wins) on oneDNN."""

    def __init__(self, pool: nn.MaxPool2d, library: str) -> None:
        super().__init__()
        if not can_replace_pool(pool):
            raise DropCovError(f"OneDNNMaxPool2d supports padded MaxPool2d without dilation or ceil_mode; got {pool!r}")
        self.kernel_size, self.stride, self.padding = _pool_attributes(pool)
        # [kernel_h, kernel_w, stride_h, stride_w, same, pad_top, pad_left]: see csrc/onednn_kernels.cc
        self.kernel_config = Tensor(np.array([*self.kernel_size, *self.stride, 0, *self.padding], np.int64))
        self.max_pool = _custom_ops(library, _output_shapes_function(self.kernel_size, self.stride, self.padding))

    def construct(self, x: Tensor) -> Tensor:
        pooled, _ = self.max_pool(x, self.kernel_config)
        return pooled

    def extend_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, backend=onednn"


def _output_shapes_function(kernel: tuple, stride: tuple, padding: tuple) -> Callable:
    """The forward ``ops.Custom``'s ``out_shape``: the pooled output's shape, twice (output and workspace).

    A plain function of exactly the op's inputs (no bound method, no ``*args``): MindSpore may compile it.
    """

    def output_shapes(x_shape: Sequence[int], config_shape: Sequence[int]) -> list[list[int]]:
        size = [(x_shape[2 + d] + 2 * padding[d] - kernel[d]) // stride[d] + 1 for d in (0, 1)]
        return [[x_shape[0], x_shape[1], size[0], size[1]], [x_shape[0], x_shape[1], size[0], size[1]]]

    return output_shapes


def _custom_ops(library: str, output_shape: Callable) -> ops.Custom:
    """The forward ``ops.Custom`` (pooled output, workspace) with the backward kernel as its bprop."""
    backward = ops.Custom(f"{library}:dropcov_max_pool2d_backward", func_type="aot",
                          out_shape=lambda dy, workspace, x, config: x,
                          out_dtype=lambda dy, workspace, x, config: dy)

    def bprop(x: Tensor, config: Tensor, out: tuple, dout: tuple) -> tuple:
        return backward(dout[0], out[1], x, config), ops.zeros_like(config)

    return ops.Custom(f"{library}:dropcov_max_pool2d_forward", func_type="aot", out_shape=output_shape,
                      out_dtype=lambda x, config: [x, mstype.uint8], bprop=bprop)

