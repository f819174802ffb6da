"""Optimizer with weight-decay parameter groups, and the loss-scale manager that goes with it.

Loss scaling rule (the original code broke it with an optimizer scale of 512 against a manager of 1024, so
each of its steps applied ``(1024 g + 512 wd w) / 512 = 2 g + wd w``; the ImageNet configs reproduce that
update with consistent scales as ``lr_max`` 0.24 and ``weight_decay`` 5e-5 instead of 0.12 and 1e-4):

- ``loss_scale_type: fixed``: ``FixedLossScaleManager(loss_scale, drop_overflow_update=False)``; the
  training step multiplies the loss by ``loss_scale`` and the optimizer divides the gradients by its own
  ``loss_scale``, so the optimizer must be built with the *same* value.
- ``loss_scale_type: dynamic``: ``DynamicLossScaleManager(init_loss_scale=loss_scale)``; the training cell
  (``TrainOneStepWithLossScaleCell``) unscales the gradients itself, so the optimizer's scale is 1.0.

:func:`optimizer_loss_scale` states that rule; :func:`create_optimizer` takes its result.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable, List, Sequence, Tuple, Union

import numpy as np

from src.errors import DropCovError

if TYPE_CHECKING:
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn

logger = logging.getLogger(__name__)

#: Substrings of parameter names that get no weight decay (BatchNorm gamma/beta, biases).
NO_DECAY_KEYWORDS = ("beta", "gamma", "bias")
LOSS_SCALE_TYPES = ("fixed", "dynamic")


def _build_momentum(params: list, learning_rate: Any, momentum: float, loss_scale: float) -> nn.Optimizer:
    from mindspore import nn

    return nn.Momentum(params, learning_rate, momentum, loss_scale=loss_scale)


_OPTIMIZERS: dict = {"Momentum": _build_momentum}
OPTIMIZER_NAMES = tuple(_OPTIMIZERS)


def weight_decay_groups(params: Iterable[Parameter],
                        decay_norm_and_bias: bool = False) -> Tuple[List[Parameter], List[Parameter]]:
    """Split trainable parameters into (decayed, not decayed).

    Not decayed: every name containing ``beta``, ``gamma`` or ``bias`` (BatchNorm scale/shift and dense
    biases), as in the recipe behind the published checkpoints; everything else (conv, dense and ECA
    weights) is decayed. ``decay_norm_and_bias`` decays every parameter (the authors' PyTorch recipe:
    ``torch.optim.SGD(model.parameters(), weight_decay=...)``). Non-trainable parameters (BN moving
    statistics) are left out of both.
    """
    decayed, not_decayed = [], []
    for param in params:
        if not param.requires_grad:
            continue
        if not decay_norm_and_bias and any(word in param.name for word in NO_DECAY_KEYWORDS):
            not_decayed.append(param)
        else:
            decayed.append(param)
    return decayed, not_decayed


def _as_learning_rate(lr: Union[float, Sequence[float], np.ndarray, Tensor]) -> Union[float, Tensor]:
    import mindspore as ms
    from mindspore import Tensor

    if isinstance(lr, Tensor):
        return lr
    if isinstance(lr, (int, float)):
        return float(lr)
    array = np.asarray(lr, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise DropCovError(f"learning-rate schedule must be a non-empty 1-D array, got shape {array.shape}")
    return Tensor(array, ms.float32)


def create_optimizer(net_or_params: Union[nn.Cell, Iterable[Parameter]], name: str = "Momentum",
                     lr: Union[float, Sequence[float], np.ndarray, Tensor] = 0.1, momentum: float = 0.9,
                     weight_decay: float = 1e-4, loss_scale: float = 1.0,
                     decay_norm_and_bias: bool = False) -> nn.Optimizer:
    """Build the optimizer over a network's trainable parameters with two weight-decay groups.

    Args:
        net_or_params: the network (its ``trainable_params()`` are used) or an iterable of Parameters.
        name: config key ``optimizer``; one of :data:`OPTIMIZER_NAMES`.
        lr: a float, or the per-step schedule from :func:`src.engine.lr_schedule.create_lr_schedule`
            (the optimizer reads entry ``global_step``; :func:`src.engine.resume.restore_optimizer_state`
            restores that Parameter on resume).
        momentum, weight_decay: config keys of the same name; weight decay is applied to the group
            returned first by :func:`weight_decay_groups` only.
        loss_scale: the optimizer's loss scale, from :func:`optimizer_loss_scale` (equal to the
            fixed manager's scale, 1.0 for a dynamic manager).
        decay_norm_and_bias: config key of the same name: decay BN gamma/beta and biases too.

    Example:
        >>> schedule = create_lr_schedule("multistep", 0.0, 0.12, 0.0, 0, 100, 5004)
        >>> opt = create_optimizer(net, "Momentum", schedule, 0.9, 1e-4, optimizer_loss_scale("fixed", 1024))
    """
    if name not in _OPTIMIZERS:
        raise DropCovError(f"optimizer {name!r} is not supported; use one of {', '.join(OPTIMIZER_NAMES)}")
    if weight_decay < 0:
        raise DropCovError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if loss_scale <= 0:
        raise DropCovError(f"loss_scale must be > 0, got {loss_scale!r}")
    params = list(net_or_params.trainable_params() if hasattr(net_or_params, "trainable_params") else net_or_params)
    if not params:
        raise DropCovError("the network has no trainable parameters to optimize")
    decayed, not_decayed = weight_decay_groups(params, decay_norm_and_bias)
    logger.info("optimizer %s: weight decay %g on %d parameter tensors (%d values), none on %d "
                "(%d values)", name, weight_decay, len(decayed),
                sum(int(np.prod(p.shape)) for p in decayed), len(not_decayed),
                sum(int(np.prod(p.shape)) for p in not_decayed))
    groups = [{"params": decayed, "weight_decay": float(weight_decay)},
              {"params": not_decayed, "weight_decay": 0.0},
              {"order_params": [p for p in params if p.requires_grad]}]
    groups = [group for group in groups if group.get("params", True)]
    return _OPTIMIZERS[name](groups, _as_learning_rate(lr), float(momentum), float(loss_scale))


def optimizer_loss_scale(kind: str, loss_scale: float) -> float:
    """The loss scale the optimizer must be built with for a manager of ``kind`` (see the module doc)."""
    _check_loss_scale(kind, loss_scale)
    return float(loss_scale) if kind == "fixed" else 1.0


def create_loss_scale_manager(kind: str = "fixed", loss_scale: float = 1024.0) -> ms.amp.LossScaleManager:
    """The loss-scale manager for config keys ``loss_scale_type`` and ``loss_scale``.

    ``fixed``: ``FixedLossScaleManager(loss_scale, drop_overflow_update=False)`` (every step updates);
    ``dynamic``: ``DynamicLossScaleManager(init_loss_scale=loss_scale, scale_factor=2, scale_window=2000)``.
    Build the optimizer with ``optimizer_loss_scale(kind, loss_scale)`` so the two agree.
    """
    import mindspore as ms

    _check_loss_scale(kind, loss_scale)
    if kind == "fixed":
        return ms.amp.FixedLossScaleManager(float(loss_scale), drop_overflow_update=False)
    return ms.amp.DynamicLossScaleManager(init_loss_scale=float(loss_scale), scale_factor=2, scale_window=2000)


def _check_loss_scale(kind: str, loss_scale: float) -> None:
    if kind not in LOSS_SCALE_TYPES:
        raise DropCovError(f"loss_scale_type {kind!r} is not known; use one of {', '.join(LOSS_SCALE_TYPES)}")
    if kind == "dynamic" and not loss_scale >= 1.0:
        raise DropCovError(f"loss_scale must be >= 1 for loss_scale_type dynamic, got {loss_scale!r}")
    if kind == "fixed" and not loss_scale > 0.0:
        raise DropCovError(f"loss_scale must be > 0 for loss_scale_type fixed, got {loss_scale!r}")
