"""Building blocks shared by the networks: stochastic depth (drop path), the residual addition and its ReLU."""
from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn, ops


def drop_path(x: Tensor, rate: float) -> Tensor:
    """Stochastic depth: zero a whole sample's residual branch with probability ``rate``, scale the rest.

    ``y_b = x_b * floor(keep + u_b) / keep`` with ``keep = 1 - rate`` and ``u_b ~ U[0, 1)`` drawn once per
    sample ``b`` by ``ops.rand`` (reproducible under ``mindspore.set_seed``), as timm's ``drop_path``.
    ``rate`` is a Python float in ``[0, 1)`` fixed when the network is built.

    Args:
        x: ``(B, ...)`` a residual branch's output, any float dtype.
        rate: drop probability.

    Returns:
        ``(B, ...)``, same dtype as ``x``.
    """
    keep = 1.0 - rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = ops.floor(ops.rand(shape, dtype=ms.float32) + keep)
    return x * ops.cast(mask / keep, x.dtype)


class DropPath(nn.Cell):
    """:func:`drop_path` in training, the identity in evaluation (and always at ``rate = 0``)."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.set_train(False)  # a new Cell has phase 'train' with training False: keep them consistent

    def construct(self, x: Tensor) -> Tensor:
        if self.training and self.rate > 0.0:
            return drop_path(x, self.rate)
        return x


class ResidualReLU(nn.Cell):
    """``relu(x + identity)``, the end of a residual block, as one cell so that one kernel can take its place
    (:func:`src.kernels.swap.use_inference_add_relus`)."""

    def construct(self, x: Tensor, identity: Tensor) -> Tensor:
        return ops.relu(x + identity)
