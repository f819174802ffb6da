"""Continue a stopped run, or start from pre-trained weights: everything a resume restores, in one place.

A resumed run restores the network (weights and BatchNorm statistics), the optimizer state (moments and
``global_step``, hence the learning rate of the per-step schedule), a dynamic loss scale's state, the model
EMA and gradient accumulators of the recipe's train step, and the best validation top-1, so it ends at the
same epoch and step as an uninterrupted run. ``--resume auto``
takes the newest readable checkpoint of the run's checkpoint folder; ``--pre_trained`` loads weights only
(a classifier of another class count is re-initialised).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from src.errors import DropCovError
from src.runtime.checkpoint import check_checkpoint_file, latest, load_checkpoint_file, read_extra

logger = logging.getLogger(__name__)

LOSS_SCALE_STATE = ("scale_sense", "current_iterator_step", "last_overflow_iterator_step")
"""Parameters of a dynamic loss-scale cell that a training checkpoint carries."""
STEP_STATE_PREFIXES = ("ema.", "ema_num_updates", "accum.")
"""Name prefixes of the recipe train step's own state (:mod:`src.engine.recipe_step`): EMA, accumulators."""


@dataclass
class TrainState:
    """Where a run stands: completed epochs and optimizer steps, best validation top-1 so far; for a run
    stopped mid-epoch, the summed loss and the steps of that epoch so far (its mean covers the whole epoch)."""

    epoch: int = 0
    global_step: int = 0
    best_top1: float | None = None
    epoch_loss_sum: float = 0.0
    epoch_loss_steps: int = 0
    resumed_from: str = ""


def check_checkpoint_options(config: Any) -> None:
    """Fail at once on a bad ``--pre_trained`` or explicit ``--resume`` file, before the data scan and build."""
    if config.pre_trained:
        check_checkpoint_file(config.pre_trained, option="pre_trained")
    if config.resume and config.resume != "auto":
        check_checkpoint_file(config.resume, option="resume")


def read_resume_state(param_dict: Mapping[str, Any], source: str = "the checkpoint") -> tuple[int, int]:
    """``(epoch_num, global_step)`` of a training checkpoint: completed epochs and optimizer steps.

    A resumed run starts at epoch index ``epoch_num`` with the optimizer at ``global_step``. Raises
    :class:`DropCovError` for a checkpoint without them (e.g. a published or converted one).
    """
    absent = [key for key in ("epoch_num", "global_step") if key not in param_dict]
    if absent:
        raise DropCovError(f"{source} holds no {' / '.join(absent)}: it is not a training checkpoint that can "
                           "be resumed; start a new run from its weights with --pre_trained instead")
    return int(read_extra(param_dict, "epoch_num")), int(read_extra(param_dict, "global_step"))


def set_global_step(optimizer: Any, global_step: int) -> None:
    """Point the optimizer at step ``global_step`` of its learning-rate schedule.

    MindSpore optimizers keep a ``global_step`` Parameter (int32, shape (1,)) that indexes the lr array and
    is incremented by every update; setting it is all a resumed run needs to continue the schedule.
    """
    from mindspore import Tensor

    if global_step < 0:
        raise DropCovError(f"global step must be >= 0, got {global_step}")
    step = optimizer.global_step
    step.set_data(Tensor(np.full(step.shape, global_step, dtype=np.int32)))


def _optimizer_state(optimizer: Any) -> dict[str, Any]:
    """The optimizer's own state Parameters (moments etc.), without its network weights, global step,
    and the values the config decides (``learning_rate``, ``momentum``)."""
    weights = {id(param) for param in optimizer.parameters}
    state = {}
    for param in optimizer.get_parameters():
        name = param.name
        if id(param) in weights or name in ("global_step", "momentum") or name.startswith("learning_rate"):
            continue
        state[name] = param
    return state


def _as_array(value: Any) -> np.ndarray:
    return value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)


def restore_optimizer_state(optimizer: Any, param_dict: Mapping[str, Any], global_step: int | None = None,
                            source: str = "the checkpoint") -> int:
    """Copy the optimizer state (``moments.<name>`` ...) and the global step from a checkpoint.

    ``global_step`` defaults to the checkpoint's; the optimizer then reads its learning rate at that step
    of the schedule it was built with. Raises :class:`DropCovError` listing state entries that are
    missing or of another shape (a checkpoint of another network or optimizer). Returns the step set.
    """
    from mindspore import Tensor

    from src.models.weights import format_shape, short_list

    state = _optimizer_state(optimizer)
    missing = [name for name in state if name not in param_dict]
    mismatched = [f"{name}: checkpoint {format_shape(_as_array(param_dict[name]).shape)} vs optimizer "
                  f"{format_shape(tuple(param.shape))}" for name, param in state.items()
                  if name in param_dict and tuple(_as_array(param_dict[name]).shape) != tuple(param.shape)]
    if missing or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing ({short_list(missing)})")
        if mismatched:
            problems.append(f"{len(mismatched)} of another shape ({short_list(mismatched)})")
        raise DropCovError(f"{source} cannot resume this optimizer: its state entries are {'; '.join(problems)}; "
                           "resume with the config it was trained with, or start a new run with --pre_trained")
    for name, param in state.items():
        param.set_data(Tensor(_as_array(param_dict[name])).astype(param.dtype))
    if global_step is None:
        if "global_step" not in param_dict:
            raise DropCovError(f"{source} holds no global_step; it cannot be resumed (use --pre_trained)")
        global_step = int(read_extra(param_dict, "global_step"))
    set_global_step(optimizer, global_step)
    return global_step


def _restore_loss_scale(train_step: Any, param_dict: Mapping[str, Any]) -> None:
    """Copy a dynamic loss scale's state (``scale_sense`` and its counters) when both sides have it."""
    import mindspore as ms
    from mindspore import Tensor

    for param in train_step.get_parameters():
        if param.name in LOSS_SCALE_STATE and param.name in param_dict:
            value = _as_array(param_dict[param.name])
            param.set_data(Tensor(np.asarray(value, dtype=ms.dtype_to_nptype(param.dtype)).reshape(param.shape)))


def _restore_step_state(train_step: Any, param_dict: Mapping[str, Any], source: str) -> None:
    """Copy the recipe step's EMA and accumulator Parameters from a checkpoint.

    A checkpoint written without a model EMA (``model_ema`` switched on for the resumed run) starts the
    average from the restored weights, with a warning; missing accumulators stay zero.
    """
    from mindspore import Tensor

    missing = []
    for param in train_step.get_parameters():
        if not param.name.startswith(STEP_STATE_PREFIXES):
            continue
        if param.name not in param_dict:
            missing.append(param.name)
            continue
        value = _as_array(param_dict[param.name])
        if tuple(value.shape) != tuple(param.shape):
            raise DropCovError(f"{source}: {param.name} has shape {tuple(value.shape)}, the run {tuple(param.shape)}; "
                               "resume with the config it was trained with")
        param.set_data(Tensor(value).astype(param.dtype))
    ema = getattr(train_step, "ema", None)
    if ema is not None and any(name.startswith("ema") for name in missing):
        logger.warning("%s holds no model EMA: the EMA starts from its weights", source)
        ema.reset()
    if hasattr(train_step, "sync_host_state"):
        train_step.sync_host_state()


def reset_ema_to_weights(train_step: Any) -> None:
    """Start the train step's model EMA (if any) from the network's current weights (after loading them)."""
    ema = getattr(train_step, "ema", None)
    if ema is not None:
        ema.reset()


def restore_training_state(net: Any, train_step: Any, optimizer: Any, param_dict: Mapping[str, Any], source: str,
                           steps_per_epoch: int, total_steps: int) -> TrainState:
    """Load a training checkpoint into the network, optimizer (moments, global step) and loss scale.

    Checks that the checkpoint was written with the same ``steps_per_epoch`` (same data, batch size,
    device count and ``train_steps_per_epoch``) so the global step means the same epoch and learning
    rate, and that it lies within this run's ``total_steps``. Returns the state to continue from.
    """
    from src.models.weights import load_network_weights

    epoch_num, global_step = read_resume_state(param_dict, source)
    saved_steps = read_extra(param_dict, "steps_per_epoch")
    if saved_steps is not None and int(saved_steps) != steps_per_epoch:
        raise DropCovError(f"{source} was written with {int(saved_steps)} steps per epoch but this run has "
                           f"{steps_per_epoch} (batch_size, device count, train_steps_per_epoch or the data "
                           "changed); resume with the settings it was trained with")
    if global_step > total_steps:
        raise DropCovError(f"{source} is at global step {global_step}, past the {total_steps} steps of this run "
                           "(epoch_size lowered?); raise epoch_size to continue it")
    load_network_weights(net, param_dict, strict=True, source=source)
    restore_optimizer_state(optimizer, param_dict, global_step, source)
    _restore_loss_scale(train_step, param_dict)
    _restore_step_state(train_step, param_dict, source)
    best = read_extra(param_dict, "best_metric")
    return TrainState(epoch=epoch_num, global_step=global_step, best_top1=None if best is None else float(best),
                      epoch_loss_sum=float(read_extra(param_dict, "epoch_loss_sum", 0.0)),
                      epoch_loss_steps=int(read_extra(param_dict, "epoch_loss_steps", 0)), resumed_from=source)


def check_ranks_agree(state: TrainState | None, parallel: Any) -> None:
    """In a data-parallel run, every rank must continue from the same global step: with an output folder
    that is not shared, ``--resume auto`` finds rank 0's checkpoints only on rank 0 (the others would start
    from scratch, diverge, then hang on differing step counts). One all-reduce; raises one line if not."""
    if getattr(parallel, "group_size", 1) <= 1:
        return
    from src.runtime.distributed import sum_over_ranks

    steps = np.zeros(parallel.group_size, np.float32)
    steps[parallel.rank] = state.global_step if state is not None else 0
    steps = sum_over_ranks(steps).astype(np.int64)
    if len(set(steps.tolist())) > 1:
        found = ", ".join(f"rank {rank}: {int(step)}" for rank, step in enumerate(steps))
        raise DropCovError(f"the ranks would continue from different global steps ({found}): each rank resumes from "
                           "OUTPUT_PATH/checkpoints as it sees it; put --output_path on a file system every node "
                           "shares (or pass --resume PATH of a checkpoint every node can read)")


def resume_or_initialise(config: Any, checkpoint_dir: Path, net: Any, optimizer: Any, train_step: Any,
                         lr_schedule: np.ndarray, steps_per_epoch: int) -> TrainState | None:
    """``--resume`` (auto: latest readable checkpoint of the folder) or ``--pre_trained`` weights.

    Returns the :class:`TrainState` to continue from, or None for a fresh start.
    """
    from src.engine.lr_schedule import lr_at_step
    from src.models import model_spec
    from src.models.weights import adapt_for_finetune, load_network_weights

    resume_path = None
    if config.resume:
        resume_path = latest(checkpoint_dir) if config.resume == "auto" else Path(config.resume)
        if resume_path is None:
            logger.info("--resume auto: no checkpoint in %s yet; starting from scratch", checkpoint_dir)
    if resume_path is not None:
        params = load_checkpoint_file(resume_path, option="resume")
        for difference in config.differences_from(read_extra(params, "config")):
            logger.warning("resume: config differs from the checkpoint's: %s", difference)
        state = restore_training_state(net, train_step, optimizer, params, str(resume_path), steps_per_epoch,
                                       config.epoch_size * steps_per_epoch)
        next_lr = lr_at_step(lr_schedule, min(state.global_step, len(lr_schedule) - 1))
        logger.info("resumed from %s: %d epochs and %d steps done; continuing at lr %.6g", resume_path,
                    state.epoch, state.global_step, next_lr)
        if config.pre_trained:
            logger.warning("--pre_trained %s ignored: the run resumes from %s", config.pre_trained, resume_path)
        return state
    if config.pre_trained:
        params = load_checkpoint_file(config.pre_trained, option="pre_trained")
        params, dropped = adapt_for_finetune(params, net, model_spec(config.net_name).classifier)
        load_network_weights(net, params, strict=True, allow_missing=dropped, source=config.pre_trained)
        if dropped:
            logger.warning("pre_trained %s: classifier of another class count not loaded (re-initialised): %s",
                           config.pre_trained, ", ".join(dropped))
        reset_ema_to_weights(train_step)
        logger.info("initialised from %s", config.pre_trained)
    return None
