"""The compiled unit of training: ``(images, labels) -> loss`` doing forward, backward and the update.

:func:`create_train_step` picks it: :func:`build_train_step` (MindSpore's training cells) for the plain
recipe, :class:`src.engine.recipe_step.RecipeTrainStep` when gradient accumulation, gradient clipping or a
model EMA is asked for.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from src.errors import DropCovError

if TYPE_CHECKING:
    import mindspore as ms
    from mindspore import nn

AMP_LEVELS = ("O0", "O2", "O3")
"""Automatic mixed precision levels (config key ``amp_level``): float32, float16 but BatchNorm, float16."""


def build_train_step(net: nn.Cell, loss_fn: nn.Cell, optimizer: nn.Optimizer, amp_level: str = "O0",
                     loss_scale_manager: ms.amp.LossScaleManager | None = None) -> nn.Cell:
    """Forward, backward and update in one cell, built with :func:`mindspore.amp.build_train_network`.

    AMP ``O0`` (float32), ``O2`` (float16 with BatchNorm in float32) or ``O3`` (float16). Cells the model
    marked ``to_float(float32)`` (the DropCov covariance pooling) are marked again after AMP, which re-flags
    the whole network. With a fixed ``FixedLossScaleManager(s, drop_overflow_update=False)`` this is a
    ``TrainOneStepCell`` that scales the loss by ``s`` (the optimizer must be built with ``loss_scale=s`` to
    divide it out again); with a dynamic manager a ``TrainOneStepWithLossScaleCell`` returning
    ``(loss, overflow, scale)``. MindSpore's dynamic loss scaling has no CPU implementation: asking for it
    on CPU is a :class:`DropCovError`.

    In a data-parallel context (``parallel_mode=DATA_PARALLEL``, set by
    :func:`src.runtime.distributed.init_data_parallel` *before* this is called) the cell all-reduces the
    gradients with MindSpore's ``DistributedGradReducer`` (mean over ranks) before the update.
    """
    import mindspore as ms

    if amp_level not in AMP_LEVELS:
        raise DropCovError(f"amp_level {amp_level!r} is not known; use one of {', '.join(AMP_LEVELS)}")
    if isinstance(loss_scale_manager, ms.amp.DynamicLossScaleManager) and ms.get_context("device_target") == "CPU":
        raise DropCovError("loss_scale_type dynamic is not supported by MindSpore on CPU; use "
                           "loss_scale_type fixed (e.g. --loss_scale_type fixed --loss_scale 1024)")
    float32_cells = [cell for _, cell in net.cells_and_names() if cell.get_flags().get("fp32")]
    train_step = ms.amp.build_train_network(net, optimizer, loss_fn, level=amp_level,
                                            loss_scale_manager=loss_scale_manager)
    if amp_level != "O0":
        for cell in float32_cells:
            cell.to_float(ms.float32)
    parallel_mode = ms.get_auto_parallel_context("parallel_mode")
    if parallel_mode == ms.ParallelMode.DATA_PARALLEL and not getattr(train_step, "reducer_flag", False):
        raise DropCovError("internal: the training cell does not all-reduce gradients in DATA_PARALLEL mode")
    return train_step


def loss_of(outputs: Any) -> Any:
    """The loss tensor of a train step's output (a tensor, or ``(loss, overflow, scale)``)."""
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def uses_recipe_step(accumulation_steps: int = 1, clip_grad_norm: float = 0.0, model_ema: bool = False) -> bool:
    """Whether these settings need the recipe's step (:mod:`src.engine.recipe_step`); else today's trains."""
    return accumulation_steps > 1 or clip_grad_norm > 0 or bool(model_ema)


def optimizer_loss_scale_for(kind: str, loss_scale: float, recipe_step: bool) -> float:
    """The optimizer's loss scale: :func:`src.engine.optimizer.optimizer_loss_scale` for today's step,
    1.0 for the recipe's step (it unscales the gradients itself, before clipping them)."""
    from src.engine.optimizer import optimizer_loss_scale

    scale = optimizer_loss_scale(kind, loss_scale)
    return 1.0 if recipe_step else scale


def create_train_step(net: nn.Cell, loss_fn: nn.Cell, optimizer: nn.Optimizer, amp_level: str = "O0",
                      loss_scale_manager: ms.amp.LossScaleManager | None = None, accumulation_steps: int = 1,
                      clip_grad_norm: float = 0.0, ema: Any = None) -> nn.Cell:
    """The compiled training step for these settings.

    With ``accumulation_steps == 1``, no clipping and no EMA this is exactly :func:`build_train_step` (same
    cell, same numbers). Otherwise a :class:`src.engine.recipe_step.RecipeTrainStep` around the same
    AMP-wrapped network and loss; build its ``optimizer`` with ``loss_scale=1.0``
    (:func:`optimizer_loss_scale_for`) and ``ema`` (:class:`src.engine.ema.ModelEma`) from the bare ``net``.

    Example:
        >>> ema = ModelEma(net, decay=0.9998, warmup=True)
        >>> step = create_train_step(net, loss_fn, optimizer, "O2", manager, accumulation_steps=4,
        ...                          clip_grad_norm=1.0, ema=ema)
        >>> loss = step(images, labels)  # every 4th call updates the weights and the EMA
    """
    if not uses_recipe_step(accumulation_steps, clip_grad_norm, ema is not None):
        return build_train_step(net, loss_fn, optimizer, amp_level, loss_scale_manager)
    from src.engine.recipe_step import RecipeTrainStep

    plain = build_train_step(net, loss_fn, optimizer, amp_level, None)  # AMP and the loss wrapper, as today
    return RecipeTrainStep(plain.network, optimizer, loss_scale_manager, accumulation_steps, clip_grad_norm, ema)
