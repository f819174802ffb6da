"""Convolutions on oneDNN's blocked layouts (``csrc/onednn_kernels.cc``) as a drop-in for ``nn.Conv2d`` on CPU.

MindSpore's CPU ``Conv2D`` kernels give oneDNN plain NCHW/OIHW tensors; :class:`OneDNNConv2d` runs the
same convolution through ``ops.Custom`` kernels that let oneDNN pick its blocked layouts, with a bprop
made of the matching backward-data and backward-filter kernels. It holds the very ``weight`` Parameter
of the ``nn.Conv2d`` it replaces, so parameter names, shapes and checkpoints do not change.

``conv_backend`` (config key) chooses: ``stock`` (MindSpore's kernels), ``onednn`` (these, or an error
saying why not), ``auto`` (these on CPU at amp_level O0 when the library builds, else stock). With
``onednn`` the padded max-pools move to oneDNN too (:mod:`src.kernels.onednn_pool`), and the batch norms'
evaluation-mode forward to one pass of our kernel (:mod:`src.kernels.batch_norm`);
:func:`src.kernels.swap.apply_conv_backend` swaps them into a network.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from mindspore import Tensor, nn, ops

from src.errors import DropCovError


def _output_size(size: int, kernel: int, stride: int, dilation: int, pad_mode: str, pad_total: int) -> int:
    """Output length of one spatial axis, as MindSpore's Conv2D computes it."""
    if pad_mode == "same":
        return -(-size // stride)
    extent = dilation * (kernel - 1) + 1
    return (size + pad_total - extent) // stride + 1


class OneDNNConv2d(nn.Cell):
    """``conv``'s convolution (same weight Parameter, stride, padding, dilation) on the oneDNN kernels.

    Supports what ResNets use: NCHW, ``group=1``, no bias, float32; any stride, dilation, kernel size and
    pad mode (``'pad'`` with 1 or 4 values, ``'same'``, ``'valid'``). An ``nn.Conv1d`` (the DropCov head's
    ECA convolution; MindSpore stores its weight as ``(out, in, 1, k)``) runs as a 1 x k convolution.
    """

    def __init__(self, conv: nn.Conv2d, library: str) -> None:
        super().__init__()
        if not can_replace(conv):
            raise DropCovError(f"OneDNNConv2d supports NCHW, group=1, bias-free Conv2d/Conv1d; got {conv!r}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.dilation = conv.kernel_size, conv.stride, conv.dilation
        self.pad_mode = conv.pad_mode
        padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,) * 4
        self.padding = padding if conv.pad_mode == "pad" else (0, 0, 0, 0)
        self.weight = conv.weight
        self.one_dimensional = isinstance(conv, nn.Conv1d)
        same = int(conv.pad_mode == "same")
        # [stride_h, stride_w, dilation_h, dilation_w, same, pad_top, pad_left]: see csrc/onednn_kernels.cc
        self.kernel_config = Tensor(np.array([*self.stride, *self.dilation, same, self.padding[0],
                                              self.padding[2]], np.int64))
        self.convolution = _custom_ops(library, output_shape_function(self))

    def construct(self, x: Tensor) -> Tensor:
        if self.one_dimensional:
            return self.convolution(x.expand_dims(2), self.weight, self.kernel_config).squeeze(2)
        return self.convolution(x, self.weight, self.kernel_config)

    def extend_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, pad_mode={self.pad_mode}, padding={self.padding}, "
                f"dilation={self.dilation}, backend=onednn")


def output_shape_function(conv: OneDNNConv2d) -> Callable:
    """The forward ``ops.Custom``'s ``out_shape`` for ``conv``: NCHW output shape from the input and weight shapes.

    A plain function of exactly the op's inputs (no bound method, no ``*args``): MindSpore may compile it.
    """
    stride, dilation, pad_mode = conv.stride, conv.dilation, conv.pad_mode
    top, bottom, left, right = conv.padding

    def output_shape(x_shape: Sequence[int], w_shape: Sequence[int], config_shape: Sequence[int]) -> list[int]:
        return [x_shape[0], w_shape[0],
                _output_size(x_shape[2], w_shape[2], stride[0], dilation[0], pad_mode, top + bottom),
                _output_size(x_shape[3], w_shape[3], stride[1], dilation[1], pad_mode, left + right)]

    return output_shape


def _custom_ops(library: str, output_shape: Callable) -> ops.Custom:
    """The forward ``ops.Custom`` with a bprop of the backward-data and backward-filter kernels."""

    # out_shape / out_dtype: functions of exactly the op's inputs (MindSpore may compile them)
    backward_data = ops.Custom(f"{library}:dropcov_conv2d_backward_data", func_type="aot",
                               out_shape=lambda dy, w, x, config: x, out_dtype=lambda dy, w, x, config: x)
    backward_filter = ops.Custom(f"{library}:dropcov_conv2d_backward_filter", func_type="aot",
                                 out_shape=lambda dy, x, w, config: w, out_dtype=lambda dy, x, w, config: w)

    def bprop(x: Tensor, weight: Tensor, config: Tensor, out: Tensor, dout: Tensor) -> tuple:
        return (backward_data(dout, weight, x, config), backward_filter(dout, x, weight, config),
                ops.zeros_like(config))

    return ops.Custom(f"{library}:dropcov_conv2d_forward", func_type="aot", out_shape=output_shape,
                      out_dtype=lambda x, w, config: x, bprop=bprop)


def can_replace(cell: nn.Cell) -> bool:
    """Whether ``cell`` is an ``nn.Conv2d`` or ``nn.Conv1d`` that :class:`OneDNNConv2d` computes exactly."""
    return (isinstance(cell, (nn.Conv2d, nn.Conv1d)) and cell.group == 1 and not cell.has_bias
            and getattr(cell, "data_format", "NCHW") == "NCHW" and cell.pad_mode in ("pad", "same", "valid"))

