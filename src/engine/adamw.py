"""AdamW (decoupled weight decay, bias-corrected moments) as a MindSpore optimizer with a per-step lr array.

For a parameter ``w`` with gradient ``g`` at update ``t`` (1-based), learning rate ``lr_t`` and weight
decay ``wd`` (0 for the parameters of the no-decay group)::

    w <- w * (1 - lr_t * wd)                                   (decoupled decay, before the step)
    m <- b1 * m + (1 - b1) * g          v <- b2 * v + (1 - b2) * g^2
    w <- w - lr_t * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

which is PyTorch's ``torch.optim.AdamW``, the optimizer timm and DeiT train with.

Why not one of MindSpore's: ``nn.AdamWeightDecay`` has no bias correction (its first steps are ~10x too
small at ``b2 = 0.999``); ``mint.optim.AdamW`` runs on Ascend only; ``experimental.optim.AdamW`` takes its
learning rate from a host-side scheduler instead of the per-step array indexed by ``global_step`` that the
rest of the engine (resume, logging) relies on, and divides no loss scale. This class is an
``nn.Optimizer`` (per-step lr array, ``global_step``, loss-scale division, parameter groups) whose update
runs MindSpore's fused Adam kernel (``ops.Adam``: ``lr * sqrt(1 - b2^t) / (1 - b1^t)``, ``m / (sqrt(v) +
eps')``) with ``eps' = eps * sqrt(1 - b2^t)``, which makes it the formula above exactly. ``t`` is
``global_step + 1``, so restoring the global step and the moments restores the bias correction too.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.ops import functional as F

_adamw_update = ops.MultitypeFuncGraph("adamw_update")


@_adamw_update.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Bool", "Tensor", "Tensor", "Tensor", "Tensor")
def _update_one(adam, beta1_power, beta2_power, beta1, beta2, eps, lr, weight_decay, decayed, gradient, param,
                exp_avg, exp_avg_sq):
    """Decoupled decay (if ``decayed``), then the fused bias-corrected Adam step on one parameter."""
    success = True
    if decayed:
        shrink = F.cast(1.0 - lr * weight_decay, F.dtype(param))
        success = F.depend(success, F.assign(param, param * shrink))
    gradient = F.cast(gradient, F.dtype(param))
    success = F.depend(success, adam(param, exp_avg, exp_avg_sq, beta1_power, beta2_power, lr, beta1, beta2,
                                     eps, gradient))
    return success


class AdamW(nn.Optimizer):
    """PyTorch-equivalent AdamW over parameter groups that differ only in ``weight_decay`` (see module doc).

    Args:
        params: Parameters, or groups ``{"params": [...], "weight_decay": wd}`` (plus ``order_params``) as
            :class:`mindspore.nn.Optimizer` takes them; a group's ``lr`` is not supported.
        learning_rate: a float or a 1-D per-step array/Tensor (entry ``global_step`` is used).
        betas: ``(b1, b2)``, each in [0, 1).
        eps: added to the bias-corrected ``sqrt(v)``; > 0.
        weight_decay: decay of parameters whose group names none.
        loss_scale: gradients are divided by it first (the fixed-loss-scale rule of the engine).

    State (checkpointed, restored on resume): ``moment1.<name>``, ``moment2.<name>`` (the names of MindSpore's Adam) and ``global_step``.
    """

    def __init__(self, params: Union[Sequence, Sequence[dict]], learning_rate=1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 loss_scale: float = 1.0) -> None:
        beta1, beta2 = (float(b) for b in betas)
        for name, value in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"AdamW {name} must lie in [0, 1), got {value}")
        if not eps > 0.0:
            raise ValueError(f"AdamW eps must be > 0, got {eps}")
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        if self.is_group_lr:
            raise ValueError("AdamW: per-group learning rates are not supported; give one learning_rate")
        if self.dynamic_weight_decay:
            raise ValueError("AdamW: weight decay must be a number, not a schedule")
        # nn.Optimizer keeps weight decay multiplied by the loss scale (for L2 added to scaled gradients);
        # the decoupled decay acts on the weights, so it is taken back out here.
        decays = self.group_weight_decay if self.is_group else [weight_decay * self.loss_scale] * self.param_length
        self.decoupled_decay = tuple(Tensor(float(wd) / self.loss_scale, ms.float32) for wd in decays)
        self.decoupled_flags = tuple(float(wd) > 0.0 for wd in decays)
        self.beta1 = Tensor(beta1, ms.float32)
        self.beta2 = Tensor(beta2, ms.float32)
        self.eps = Tensor(float(eps), ms.float32)
        self.exp_avg = self._parameters.clone(prefix="moment1", init="zeros")
        self.exp_avg_sq = self._parameters.clone(prefix="moment2", init="zeros")
        self.adam = ops.Adam(use_locking=False, use_nesterov=False)

    def construct(self, gradients):
        gradients = self.scale_grad(gradients)
        lr = self.get_lr()
        step = F.cast(self.global_step, ms.float32).reshape(()) + 1.0
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        beta1_power = ops.pow(self.beta1, step)
        beta2_power = ops.pow(self.beta2, step)
        eps = self.eps * ops.sqrt(1.0 - beta2_power)
        return self.hyper_map(F.partial(_adamw_update, self.adam, beta1_power, beta2_power, self.beta1,
                                        self.beta2, eps, lr),
                              self.decoupled_decay, self.decoupled_flags, gradients, self._parameters,
                              self.exp_avg, self.exp_avg_sq)
