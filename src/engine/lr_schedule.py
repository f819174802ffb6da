"""Per-step learning-rate schedules.

A schedule is a float32 array with one learning rate per optimizer step (``total_epochs *
steps_per_epoch`` entries). MindSpore's optimizers take it as a 1-D Tensor and read entry
``global_step`` at every step, so a resumed run that restores the optimizer's ``global_step``
continues at exactly the right learning rate (see :func:`lr_at_step`).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from src.errors import DropCovError

MAX_STEPS = 2**31 - 1
"""MindSpore optimizers count steps in an int32 ``global_step`` (and read the schedule at that index)."""
LR_DECAY_MODES = ("multistep", "linear", "cosine", "poly", "constant")
LR_SCHEDULE_UNITS = ("step", "epoch")


def create_lr_schedule(mode: str, lr_init: float, lr_max: float, lr_end: float, warmup_epochs: float,
                       total_epochs: int, steps_per_epoch: int, milestones: Sequence[int] = (30, 60, 90),
                       gamma: float = 0.1, power: float = 2.0, unit: str = "step",
                       warmup_prefix: bool = True) -> np.ndarray:
    """Learning rate for every step of a run, shape ``(total_epochs * steps_per_epoch,)``, float32.

    With ``S = steps_per_epoch`` and step ``i`` (0-based, the step about to be taken when
    ``global_step == i``), the schedule is a function of a time ``t`` counted in ``unit``:

    - ``unit="step"`` (default): ``t = i``, ``W = round(warmup_epochs * S)`` warmup steps,
      ``T = total_epochs * S`` steps in all; the rate changes at every step.
    - ``unit="epoch"``: ``t = i // S``, ``W = warmup_epochs`` (a whole number), ``T = total_epochs``; the rate
      is constant within an epoch, as timm's schedulers set it by default and DeiT trains.

    Then:

    - warmup, ``t < W``: ``lr_init + (lr_max - lr_init) * t / W`` (linear; ``t = W`` reaches ``lr_max``).
      ``lr_init`` is DeiT's / timm's ``warmup_lr``.
    - after warmup, with progress ``p = (t - W) / (T - W)`` (``warmup_prefix=True``, the default: the decay
      starts after the warmup) or ``p = t / T`` (``warmup_prefix=False``: the decay is counted from the
      start of the run, as timm's cosine scheduler with its default ``warmup_prefix=False``):

      - ``multistep``: ``lr_max * gamma ** k``, ``k`` = number of milestones ``m`` (in epochs, counted from
        the start of the run) with ``t >= m`` epochs.
        Published recipe: ``lr_max=0.12``, milestones ``(30, 60, 90)``, ``gamma=0.1``, 100 epochs, no warmup.
      - ``linear``: ``lr_end + (lr_max - lr_end) * (1 - p)``
      - ``cosine``: ``lr_end + (lr_max - lr_end) * (1 + cos(pi * p)) / 2``
      - ``poly``: ``lr_end + (lr_max - lr_end) * (1 - p) ** power``
      - ``constant``: ``lr_max``

    ``lr_end`` is the floor the decay ends at (DeiT's / timm's ``min_lr``); unused by ``multistep`` and
    ``constant``. Raises :class:`DropCovError` naming the config key at fault (``lr_decay_mode``,
    ``warmup_epochs``, ...).
    """
    if unit not in LR_SCHEDULE_UNITS:
        raise DropCovError(f"lr_schedule_unit {unit!r} is not known; use one of {', '.join(LR_SCHEDULE_UNITS)}")
    if unit == "epoch" and warmup_epochs != int(warmup_epochs):
        raise DropCovError(f"warmup_epochs must be a whole number with lr_schedule_unit epoch, got {warmup_epochs!r}")
    if mode not in LR_DECAY_MODES:
        raise DropCovError(f"lr_decay_mode {mode!r} is not known; use one of {', '.join(LR_DECAY_MODES)}")
    if int(total_epochs) != total_epochs or total_epochs < 1:
        raise DropCovError(f"epoch_size must be a positive integer, got {total_epochs!r}")
    if int(steps_per_epoch) != steps_per_epoch or steps_per_epoch < 1:
        raise DropCovError(f"steps per epoch must be a positive integer, got {steps_per_epoch!r} "
                           "(is the training set smaller than one batch?)")
    if not 0 <= warmup_epochs <= total_epochs:
        raise DropCovError(f"warmup_epochs must lie in [0, epoch_size={total_epochs}], got {warmup_epochs!r}")
    if mode == "multistep":
        if any(b <= a for a, b in zip(milestones, list(milestones)[1:])) or any(m < 0 for m in milestones):
            raise DropCovError(f"lr_milestones must be increasing non-negative epochs, got {list(milestones)}")
        if gamma <= 0:
            raise DropCovError(f"lr_gamma must be positive, got {gamma!r}")
    if mode == "poly" and power <= 0:
        raise DropCovError(f"lr_power must be positive, got {power!r}")
    if int(total_epochs) * int(steps_per_epoch) > MAX_STEPS:
        raise DropCovError(f"epoch_size={total_epochs} x {steps_per_epoch} steps per epoch is more than the "
                           f"{MAX_STEPS:,} optimizer steps a run can count (MindSpore's int32 global step); "
                           "lower epoch_size")

    total_epochs, steps_per_epoch = int(total_epochs), int(steps_per_epoch)
    total_steps = total_epochs * steps_per_epoch
    per_epoch = steps_per_epoch if unit == "step" else 1  # time units per epoch
    total_time = total_epochs * per_epoch
    warmup_time = int(round(warmup_epochs * per_epoch))
    step = np.arange(total_steps, dtype=np.float64)
    if unit == "epoch":
        step = np.floor_divide(step, steps_per_epoch)
    lr = np.empty(total_steps, dtype=np.float64)

    warm = step < warmup_time
    if warmup_time > 0:
        lr[warm] = lr_init + (lr_max - lr_init) * step[warm] / warmup_time

    decay = ~warm
    if warmup_prefix:
        progress = (step[decay] - warmup_time) / max(total_time - warmup_time, 1)  # in [0, 1)
    else:
        progress = step[decay] / total_time
    if mode == "multistep":
        boundaries = np.asarray(list(milestones), dtype=np.float64) * per_epoch
        passed = (step[decay][:, None] >= boundaries[None, :]).sum(axis=1)
        lr[decay] = lr_max * np.power(gamma, passed)
    elif mode == "linear":
        lr[decay] = lr_end + (lr_max - lr_end) * (1.0 - progress)
    elif mode == "cosine":
        lr[decay] = lr_end + (lr_max - lr_end) * 0.5 * (1.0 + np.cos(math.pi * progress))
    elif mode == "poly":
        lr[decay] = lr_end + (lr_max - lr_end) * np.power(1.0 - progress, power)
    else:  # constant
        lr[decay] = lr_max
    return lr.astype(np.float32)


def lr_at_step(schedule: np.ndarray, global_step: int) -> float:
    """The learning rate the optimizer uses when its ``global_step`` equals ``global_step``.

    Used on resume (and for logging) to state the lr a restored run continues with; raises
    :class:`DropCovError` when the step lies past the end of the schedule (the run already finished,
    or ``epoch_size`` was lowered since the checkpoint was written).
    """
    if not 0 <= global_step < len(schedule):
        raise DropCovError(f"global step {global_step} lies outside the learning-rate schedule of "
                           f"{len(schedule)} steps: the checkpoint's run has finished, or epoch_size / "
                           "train_steps_per_epoch changed since it was written; raise epoch_size to train on")
    return float(schedule[global_step])
