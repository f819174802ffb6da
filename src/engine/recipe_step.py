"""The training step of the modern recipe: gradient accumulation, gradient clipping and model EMA, with
fixed or dynamic loss scaling and data parallel, in one compiled cell.

:func:`src.engine.train_step.create_train_step` returns today's step
(:func:`src.engine.train_step.build_train_step`, unchanged) when none of these is asked for, and a
:class:`RecipeTrainStep` otherwise. One call of either trains on one batch and returns its loss. A
``RecipeTrainStep`` with ``accumulation_steps = k`` updates the weights on every k-th call; in between it
adds the batch's gradients to ``accum.<name>``. The update:

1. ``g = accum + g_k / k`` -- the mean gradient of the k micro-batches (each unscaled by the loss scale and
   divided by k in one multiply: ``grad(loss * s) / (s k)``; the first of a cycle is assigned to the
   accumulators, the others added), which equals the gradient of the mean loss over the k-times batch;
2. all-reduce ``g`` over the ranks (mean) in a data-parallel run -- once per update, not per micro-batch;
3. dynamic loss scale: the update is skipped when ``g`` holds Inf/NaN, and the scale adjusted
   (MindSpore's ``DynamicLossScaleUpdateCell``: halve on overflow, double after 2,000 good updates);
4. ``clip_grad_norm > 0``: ``g *= c / max(||g||, c)`` over all gradients together (global norm);
5. the optimizer update, then the EMA update (:class:`src.engine.ema.ModelEma`).

Because the step unscales the gradients itself, its optimizer must be built with ``loss_scale=1.0``
(:func:`src.engine.train_step.optimizer_loss_scale_for`). Overflow is detected with
``mindspore.amp.all_finite``, so the dynamic loss scale works on the CPU too (MindSpore's own loss-scale
cell refuses the CPU).

State: ``accum.<name>`` and ``accum.micro_steps`` (batches accumulated since the last update),
``scale_sense`` (dynamic scale), the EMA's ``ema.*``: all Parameters of the cell, so a checkpoint of the
cell holds them and loading it back continues bit-exactly (call :meth:`RecipeTrainStep.sync_host_state`
after loading Parameters into the cell).
"""
from __future__ import annotations

from typing import Any

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.ops import functional as F

from src.engine.ema import ModelEma
from src.errors import DropCovError

ACCUMULATOR_PREFIX = "accum"
MICRO_STEPS_NAME = "accum.micro_steps"

_unscale = ops.MultitypeFuncGraph("unscale")
_assign_to = ops.MultitypeFuncGraph("assign_to")
_add_to = ops.MultitypeFuncGraph("add_to")
_sum_with = ops.MultitypeFuncGraph("sum_with")

#: What one call does (a compile-time constant: one graph per phase that occurs).
ONLY, FIRST, MIDDLE, LAST = 0, 1, 2, 3  # update at once; start, continue, finish an accumulation cycle


@_unscale.register("Tensor", "Tensor")
def _unscale_one(inverse_scale, gradient):
    return gradient * F.cast(inverse_scale, F.dtype(gradient))


@_assign_to.register("Tensor", "Tensor")
def _assign_one(accumulator, gradient):
    return F.assign(accumulator, F.cast(gradient, F.dtype(accumulator)))


@_add_to.register("Tensor", "Tensor")
def _add_one(accumulator, gradient):
    return F.assign_add(accumulator, F.cast(gradient, F.dtype(accumulator)))


@_sum_with.register("Tensor", "Tensor")
def _sum_one(accumulator, gradient):
    """``accumulator + gradient`` (the accumulator is left as it is: the next cycle overwrites it)."""
    return accumulator + F.cast(gradient, F.dtype(accumulator))


class RecipeTrainStep(nn.Cell):
    """Forward, backward, accumulation, all-reduce, clipping, optimizer and EMA (see the module doc).

    Args:
        network_with_loss: ``(images, labels) -> loss`` (AMP already applied, as
            ``mindspore.amp.build_train_network`` wraps it).
        optimizer: built with ``loss_scale=1.0``.
        loss_scale_manager: None, a ``FixedLossScaleManager`` or a ``DynamicLossScaleManager``.
        accumulation_steps: k >= 1 micro-batches per update.
        clip_grad_norm: max global gradient norm; 0 = no clipping.
        ema: the model EMA to update after each optimizer update, or None.

    Call it as ``step(images, labels)`` once per batch; it returns the batch's loss. The host keeps count of
    the micro-batches (no device synchronisation per call) and compiles one graph per phase of a cycle
    (:data:`ONLY` when k = 1; :data:`FIRST`, :data:`MIDDLE` when k > 2, :data:`LAST`).
    """

    def __init__(self, network_with_loss: nn.Cell, optimizer: nn.Optimizer,
                 loss_scale_manager: ms.amp.LossScaleManager | None = None, accumulation_steps: int = 1,
                 clip_grad_norm: float = 0.0, ema: ModelEma | None = None) -> None:
        super().__init__(auto_prefix=False)
        if int(accumulation_steps) != accumulation_steps or accumulation_steps < 1:
            raise DropCovError(f"accumulation_steps must be an integer >= 1, got {accumulation_steps!r}")
        if not clip_grad_norm >= 0:
            raise DropCovError(f"clip_grad_norm must be >= 0 (0 = off), got {clip_grad_norm!r}")
        if getattr(optimizer, "loss_scale", 1.0) != 1.0:
            raise DropCovError(f"internal: the recipe training step unscales the gradients itself; build its optimizer "
                               f"with loss_scale 1.0, not {optimizer.loss_scale}")
        self.network = network_with_loss
        self.network.set_grad()
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.hyper_map = ops.HyperMap()
        self.accumulation_steps = int(accumulation_steps)
        self.accumulating = self.accumulation_steps > 1
        if self.accumulating:
            self.accumulators = self.weights.clone(prefix=ACCUMULATOR_PREFIX, init="zeros")
            self.micro_steps = Parameter(Tensor(0, ms.int32), name=MICRO_STEPS_NAME, requires_grad=False)
        self.clip_grad_norm = float(clip_grad_norm)
        self.ema = ema
        self.loss_scale_update, self.dynamic = _loss_scale_update_cell(loss_scale_manager)
        initial_scale = float(loss_scale_manager.get_loss_scale()) if loss_scale_manager is not None else 1.0
        if self.dynamic:
            self.scale_sense = Parameter(Tensor(initial_scale, ms.float32), name="scale_sense", requires_grad=False)
        else:
            self.scale_sense = Tensor(initial_scale, ms.float32)
        self.reducer_flag, self.grad_reducer = _gradient_reducer(self.weights)
        self._pending: int | None = None  # micro-batches accumulated since the last update (host copy)

    def construct(self, images: Tensor, labels: Tensor, phase: int) -> Tensor:
        loss = self.network(images, labels)
        scale = self.scale_sense
        sens = F.ones_like(loss) * F.cast(scale, F.dtype(loss))
        grads = self.grad(self.network, self.weights)(images, labels, sens)
        inverse = ops.reciprocal(F.cast(scale, ms.float32) * self.accumulation_steps)  # unscale and average
        grads = self.hyper_map(F.partial(_unscale, inverse), grads)
        if phase == FIRST:
            stored = self.hyper_map(_assign_to, self.accumulators, grads)
            return F.depend(loss, F.depend(F.assign(self.micro_steps, Tensor(1, ms.int32)), stored))
        if phase == MIDDLE:
            added = self.hyper_map(_add_to, self.accumulators, grads)
            return F.depend(loss, F.depend(F.assign_add(self.micro_steps, Tensor(1, ms.int32)), added))
        if phase == LAST:
            grads = self.hyper_map(_sum_with, self.accumulators, grads)
            loss = F.depend(loss, F.assign(self.micro_steps, Tensor(0, ms.int32)))
        grads = self.grad_reducer(grads)
        if self.dynamic:
            overflow = ops.logical_not(ms.amp.all_finite(grads))
            overflow = self.loss_scale_update(self.scale_sense, overflow)
            if not overflow:
                loss = F.depend(loss, self._update(grads))
            return loss
        return F.depend(loss, self._update(grads))

    def _update(self, grads):
        if self.clip_grad_norm > 0:
            grads = ops.clip_by_global_norm(grads, self.clip_grad_norm)
        updated = self.optimizer(grads)
        if self.ema is not None:
            updated = F.depend(self.ema(), updated)
        return updated

    def __call__(self, images: Tensor, labels: Tensor) -> Any:
        """Train on one batch: accumulate it, or (every k-th call) accumulate it and update."""
        if self._pending is None:
            self.sync_host_state()
        last = self._pending + 1 >= self.accumulation_steps
        phase = ONLY if self.accumulation_steps == 1 else LAST if last else FIRST if self._pending == 0 else MIDDLE
        loss = super().__call__(images, labels, phase)
        self._pending = 0 if last else self._pending + 1
        return loss

    def sync_host_state(self) -> None:
        """Read the micro-batch count from its Parameter (after loading a checkpoint into the cell)."""
        self._pending = int(self.micro_steps.asnumpy()) if self.accumulating else 0
        if not 0 <= self._pending < self.accumulation_steps:
            raise DropCovError(f"the checkpoint holds {self._pending} accumulated micro-batches, but "
                               f"accumulation_steps is {self.accumulation_steps}; resume with the accumulation_steps "
                               "it was trained with")


def _loss_scale_update_cell(manager: ms.amp.LossScaleManager | None):
    """``(update cell or None, dynamic?)`` for a loss-scale manager."""
    if manager is None:
        return None, False
    update_cell = manager.get_update_cell()
    if update_cell is None:
        return None, False
    if isinstance(manager, ms.amp.FixedLossScaleManager):
        raise DropCovError("a fixed loss scale that skips overflowing updates is not supported here; use "
                           "loss_scale_type dynamic")
    return update_cell, True


def _gradient_reducer(weights) -> tuple:
    """``(True, DistributedGradReducer)`` in a data-parallel context (mean over the ranks, as
    ``TrainOneStepCell``), else ``(False, identity)``."""
    parallel_mode = ms.get_auto_parallel_context("parallel_mode")
    if parallel_mode not in (ms.ParallelMode.DATA_PARALLEL, ms.ParallelMode.HYBRID_PARALLEL):
        return False, ops.identity
    from mindspore.communication import get_group_size

    mean = ms.get_auto_parallel_context("gradients_mean")
    return True, nn.DistributedGradReducer(weights, mean, get_group_size())
