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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class OptimizerHyperparameters:
    """The per-optimizer settings besides lr and weight decay (config keys of the same names)."""

    momentum: float = 0.9
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


def _build_momentum(params: list, learning_rate: Any, loss_scale: float,
                    hyper: OptimizerHyperparameters) -> nn.Optimizer:
    from mindspore import nn

    return nn.Momentum(params, learning_rate, hyper.momentum, loss_scale=loss_scale)


def _build_adamw(params: list, learning_rate: Any, loss_scale: float,
                 hyper: OptimizerHyperparameters) -> nn.Optimizer:
    from src.engine.adamw import AdamW

    return AdamW(params, learning_rate, betas=hyper.betas, eps=hyper.eps, loss_scale=loss_scale)


_OPTIMIZERS: dict = {"Momentum": _build_momentum, "AdamW": _build_adamw}
OPTIMIZER_NAMES = tuple(_OPTIMIZERS)


def _named(name: str, names: Sequence[str]) -> bool:
    """Whether parameter ``name`` is one of ``names``, as a whole or as its trailing dotted part."""
    return any(name == wanted or name.endswith("." + wanted) for wanted in names)


def weight_decay_groups(params: Iterable[Parameter], decay_norm_and_bias: bool = False,
                        one_dimensional: bool = False,
                        names: Sequence[str] = ()) -> Tuple[List[Parameter], List[Parameter]]:
    """Split trainable parameters into (decayed, not decayed).

    Not decayed, by default: every name containing ``beta``, ``gamma`` or ``bias`` (BatchNorm and
    LayerNorm scale/shift, biases), as in the recipe behind the published checkpoints; everything else
    (conv, dense and ECA weights) is decayed. Non-trainable parameters (BN moving statistics) are left out
    of both.

    Args:
        decay_norm_and_bias: decay the parameters those names pick too (the authors' PyTorch recipe:
            ``torch.optim.SGD(model.parameters(), weight_decay=...)``; config key of the same name).
        one_dimensional: also exempt every parameter with at most one dimension (timm's rule for
            norm weights and biases; config key ``no_decay_1d``).
        names: parameter names exempt as a whole or as their trailing dotted part, e.g. ``cls_token``,
            ``pos_embed`` (config key ``no_decay_names`` plus the model's own ``no_weight_decay()``).
    """
    decayed, not_decayed = [], []
    for param in params:
        if not param.requires_grad:
            continue
        keyword = not decay_norm_and_bias and any(word in param.name for word in NO_DECAY_KEYWORDS)
        if keyword or (one_dimensional and len(param.shape) <= 1) or _named(param.name, names):
            not_decayed.append(param)
        else:
            decayed.append(param)
    return decayed, not_decayed


def model_no_weight_decay(net: Any) -> Tuple[str, ...]:
    """Parameter names the model exempts from weight decay through a ``no_weight_decay()`` method, as timm
    models declare theirs (e.g. ``{"cls_token", "pos_embed"}``); ``()`` when it has none."""
    declare = getattr(net, "no_weight_decay", None)
    return tuple(sorted(declare())) if callable(declare) else ()


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
                     weight_decay: float = 1e-4, loss_scale: float = 1.0, decay_norm_and_bias: bool = False,
                     betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8, no_decay_1d: bool = False,
                     no_decay_names: Sequence[str] = ()) -> nn.Optimizer:
    """Build the optimizer over a network's trainable parameters with two weight-decay groups.

    Args:
        net_or_params: the network (its ``trainable_params()`` are used, and the names its
            ``no_weight_decay()`` returns, if it has one, join ``no_decay_names``) or Parameters.
        name: config key ``optimizer``; one of :data:`OPTIMIZER_NAMES`: ``Momentum`` (SGD with momentum,
            L2 decay added to the gradient) or ``AdamW`` (:class:`src.engine.adamw.AdamW`, decoupled decay).
        lr: a float, or the per-step schedule from :func:`src.engine.lr_schedule.create_lr_schedule`
            (the optimizer reads entry ``global_step``; :func:`src.engine.resume.restore_optimizer_state`
            restores that Parameter on resume).
        momentum, weight_decay: config keys of the same name; weight decay is applied to the group
            returned first by :func:`weight_decay_groups` only.
        loss_scale: the optimizer's loss scale, from :func:`optimizer_loss_scale` (equal to the
            fixed manager's scale, 1.0 for a dynamic manager).
        decay_norm_and_bias: config key of the same name: decay BN gamma/beta and biases too.
        betas, eps: AdamW's moment decay rates and denominator term (config keys ``adam_betas``,
            ``adam_eps``); unused by Momentum.
        no_decay_1d, no_decay_names: more of the no-decay group, see :func:`weight_decay_groups`.

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
    hyper = _hyperparameters(momentum, betas, eps)
    params = list(net_or_params.trainable_params() if hasattr(net_or_params, "trainable_params") else net_or_params)
    if not params:
        raise DropCovError("the network has no trainable parameters to optimize")
    if hasattr(net_or_params, "trainable_params"):
        no_decay_names = tuple(no_decay_names) + model_no_weight_decay(net_or_params)
    decayed, not_decayed = weight_decay_groups(params, decay_norm_and_bias, no_decay_1d, tuple(no_decay_names))
    logger.info("optimizer %s: weight decay %g on %d parameter tensors (%d values), none on %d "
                "(%d values)", name, weight_decay, len(decayed),
                sum(int(np.prod(p.shape)) for p in decayed), len(not_decayed),
                sum(int(np.prod(p.shape)) for p in not_decayed))
    groups = [{"params": decayed, "weight_decay": float(weight_decay)},
              {"params": not_decayed, "weight_decay": 0.0},
              {"order_params": [p for p in params if p.requires_grad]}]
    groups = [group for group in groups if group.get("params", True)]
    return _OPTIMIZERS[name](groups, _as_learning_rate(lr), float(loss_scale), hyper)


def _hyperparameters(momentum: float, betas: Sequence[float], eps: float) -> OptimizerHyperparameters:
    betas = tuple(float(b) for b in betas)
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise DropCovError(f"adam_betas must be two numbers in [0, 1), got {list(betas)}")
    if not eps > 0.0:
        raise DropCovError(f"adam_eps must be > 0, got {eps!r}")
    return OptimizerHyperparameters(momentum=float(momentum), betas=betas, eps=float(eps))


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
