"""Label-smoothed cross entropy, computed in float32 whatever the logits' dtype."""
from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn, ops

from src.errors import DropCovError


class LabelSmoothedCrossEntropy(nn.Cell):
    """Cross entropy against smoothed one-hot targets, averaged over the batch.

    For logits ``z`` of shape ``(B, K)`` and integer labels ``y`` of shape ``(B,)``, the target of
    sample ``b`` is ``q_bk = 1 - eps`` for ``k = y_b`` and ``eps / (K - 1)`` otherwise, and

        loss = mean_b( -sum_k q_bk * log_softmax(z_b)_k )

    ``eps = 0`` is plain cross entropy. Logits are cast to float32 first, so an fp16 network (AMP O2/O3)
    still gets a float32 softmax and loss.
    """

    def __init__(self, num_classes: int, label_smooth_factor: float = 0.0) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.on_value = Tensor(1.0 - label_smooth_factor, ms.float32)
        self.off_value = Tensor(label_smooth_factor / (num_classes - 1), ms.float32)

    def construct(self, logits: Tensor, labels: Tensor) -> Tensor:
        logits = ops.cast(logits, ms.float32)
        labels = ops.cast(labels, ms.int32)
        target = ops.one_hot(labels, self.num_classes, self.on_value, self.off_value)
        per_sample = -ops.reduce_sum(target * ops.log_softmax(logits, -1), -1)
        return ops.reduce_mean(per_sample)


def create_loss(num_classes: int, label_smooth_factor: float = 0.0) -> LabelSmoothedCrossEntropy:
    """The training/evaluation loss: label-smoothed cross entropy (see :class:`LabelSmoothedCrossEntropy`).

    Args:
        num_classes: K, the number of logits (``class_num``); at least 2.
        label_smooth_factor: eps in [0, 1); the published recipe uses 0.1 (``use_label_smooth: True``).
            Pass 0.0 when ``use_label_smooth`` is off.

    Example:
        >>> loss_fn = create_loss(1001, 0.1)
        >>> loss = loss_fn(logits, labels)  # logits (B, 1001) any float dtype, labels (B,) int32
    """
    if int(num_classes) != num_classes or num_classes < 2:
        raise DropCovError(f"class_num must be an integer >= 2, got {num_classes!r}")
    if not 0.0 <= label_smooth_factor < 1.0:
        raise DropCovError(f"label_smooth_factor must lie in [0, 1), got {label_smooth_factor!r}")
    return LabelSmoothedCrossEntropy(int(num_classes), float(label_smooth_factor))
