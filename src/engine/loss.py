"""Cross entropy against label-smoothed one-hot or soft (Mixup/CutMix) targets, in float32 whatever the
logits' dtype."""
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


class SoftTargetCrossEntropy(nn.Cell):
    """Cross entropy against given target distributions, averaged over the batch (timm's loss of the same name).

    For logits ``z`` of shape ``(B, K)`` and targets ``q`` of shape ``(B, K)`` (rows summing to 1, e.g. the
    Mixup/CutMix targets of :func:`src.data.mixup.mixup_target` with label smoothing folded in),

        loss = mean_b( -sum_k q_bk * log_softmax(z_b)_k )

    Logits and targets are cast to float32 first.
    """

    def construct(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits = ops.cast(logits, ms.float32)
        targets = ops.cast(targets, ms.float32)
        per_sample = -ops.reduce_sum(targets * ops.log_softmax(logits, -1), -1)
        return ops.reduce_mean(per_sample)


def create_loss(num_classes: int, label_smooth_factor: float = 0.0, soft_targets: bool = False) -> nn.Cell:
    """The training loss: label-smoothed cross entropy on integer labels (:class:`LabelSmoothedCrossEntropy`),
    or cross entropy on soft targets (:class:`SoftTargetCrossEntropy`) when the pipeline mixes images.

    Args:
        num_classes: K, the number of logits (``class_num``); at least 2.
        label_smooth_factor: eps in [0, 1); the published recipe uses 0.1 (``use_label_smooth: True``).
            Pass 0.0 when ``use_label_smooth`` is off. With ``soft_targets`` the smoothing is already in the
            targets (the pipeline folds it in), so it is only checked here.
        soft_targets: the labels are ``(B, K)`` distributions (Mixup/CutMix on), not ``(B,)`` integers.

    Example:
        >>> loss_fn = create_loss(1001, 0.1)
        >>> loss = loss_fn(logits, labels)  # logits (B, 1001) any float dtype, labels (B,) int32
    """
    if int(num_classes) != num_classes or num_classes < 2:
        raise DropCovError(f"class_num must be an integer >= 2, got {num_classes!r}")
    if not 0.0 <= label_smooth_factor < 1.0:
        raise DropCovError(f"label_smooth_factor must lie in [0, 1), got {label_smooth_factor!r}")
    if soft_targets:
        return SoftTargetCrossEntropy()
    return LabelSmoothedCrossEntropy(int(num_classes), float(label_smooth_factor))
