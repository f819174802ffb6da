"""What the oneDNN kernel tests share: a float64 numpy convolution and the gradient cell they compare with."""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from numpy.lib.stride_tricks import sliding_window_view


def numpy_conv2d(x, w, stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0)) -> np.ndarray:
    """Direct convolution in float64, ``(N, C, H, W) * (O, C, kh, kw) -> (N, O, H', W')``;
    pads = (top, bottom, left, right)."""
    stride = (stride, stride) if isinstance(stride, int) else tuple(stride)
    top, bottom, left, right = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    kh, kw = w.shape[2:]
    extent_h, extent_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    windows = sliding_window_view(xp, (extent_h, extent_w), axis=(2, 3))
    windows = windows[:, :, ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]]
    return np.einsum("nchwij,ocij->nohw", windows, w.astype(np.float64))


class GradOfProbe(nn.Cell):
    """Gradients of ``sum(conv(x) * probe)`` with respect to x and the weight."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv
        self.grad = ops.GradOperation(get_all=True, get_by_list=True)
        self.weights = ms.ParameterTuple([conv.weight])

    def loss(self, x, probe):
        return (self.conv(x) * probe).sum()

    def construct(self, x, probe):
        return self.grad(self.loss, self.weights)(x, probe)
