"""The training loop: one compiled train step, ``train_one_epoch`` and ``fit`` (epochs, checkpoints, eval).

Host synchronisation happens only at the logging interval (and at epoch end): the loss tensors of the
steps in between are kept on the device and read together. At each such point the loop

- checks that every loss of the window is finite (a NaN/Inf stops the run with a :class:`DropCovError`
  naming the first bad global step; detection lags by at most ``log_interval`` steps, the step named
  is exact),
- in a data-parallel run, averages the window's losses over the ranks and agrees on a stop request
  (one small all-reduce), so every rank logs, stops and fails at the same step,
- logs ``epoch e/E step s/S loss lr images/s ETA`` and appends a ``metrics.jsonl`` record.

A stop request (SIGTERM/SIGINT, :class:`src.runtime.signals.StopRequest`) is honoured at the next step
boundary in a single process and at the next logging point in a data-parallel run: rank 0 writes a
checkpoint holding the exact global step, then the run returns. Checkpoints are only written by rank 0
and never with a non-finite loss or weights, so the last checkpoint on disk is always a good one.

Resuming (:func:`restore_training_state`) restores the weights, BatchNorm statistics, optimizer moments,
global step (hence the learning rate) and best top-1, and the run ends at the same epoch and step as an
uninterrupted one. The order of the training images after a resume is not the uninterrupted run's:
MindSpore's pipeline starts its shuffle sequence again.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Sequence

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from src.engine.evaluate import evaluate, sum_over_ranks
from src.engine.metrics import MetricsWriter, ThroughputMeter, format_duration
from src.errors import DropCovError

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ train step
def build_train_step(net: nn.Cell, loss_fn: nn.Cell, optimizer: nn.Optimizer, amp_level: str = "O0",
                     loss_scale_manager: ms.amp.LossScaleManager | None = None) -> nn.Cell:
    """The compiled unit of training: ``(images, labels) -> loss`` doing forward, backward and update.

    Built with :func:`mindspore.amp.build_train_network`: AMP ``O0`` (float32), ``O2`` (float16 with
    BatchNorm in float32) or ``O3`` (float16). Cells the model marked ``to_float(float32)`` (the DropCov
    covariance pooling) are marked again after AMP, which re-flags the whole network. With a fixed
    ``FixedLossScaleManager(s, drop_overflow_update=False)`` this is a ``TrainOneStepCell`` that scales the
    loss by ``s`` (the optimizer must be built with ``loss_scale=s`` to divide it out again); with a
    dynamic manager a ``TrainOneStepWithLossScaleCell`` returning ``(loss, overflow, scale)``.

    In a data-parallel context (``parallel_mode=DATA_PARALLEL``, set by
    :func:`src.runtime.distributed.init_data_parallel` *before* this is called) the cell all-reduces the
    gradients with MindSpore's ``DistributedGradReducer`` (mean over ranks) before the update.
    """
    float32_cells = [cell for _, cell in net.cells_and_names() if cell.get_flags().get("fp32")]
    try:
        train_step = ms.amp.build_train_network(net, optimizer, loss_fn, level=amp_level,
                                                loss_scale_manager=loss_scale_manager)
    except ValueError as error:
        if "CPU" in str(error):
            raise DropCovError("loss_scale_type dynamic is not supported by MindSpore on CPU; use "
                               "loss_scale_type fixed (e.g. --loss_scale_type fixed --loss_scale 1024)") from error
        raise
    if amp_level != "O0":
        for cell in float32_cells:
            cell.to_float(ms.float32)
    parallel_mode = ms.get_auto_parallel_context("parallel_mode")
    if parallel_mode == ms.ParallelMode.DATA_PARALLEL and not getattr(train_step, "reducer_flag", False):
        raise DropCovError("internal: the training cell does not all-reduce gradients in DATA_PARALLEL mode")
    return train_step


def _loss_of(outputs: Any) -> Tensor:
    """The loss tensor of a train step's output (a tensor, or ``(loss, overflow, scale)``)."""
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


# ---------------------------------------------------------------------------------------------- state
@dataclass
class TrainSettings:
    """What the loop does and when (plain values from the config keys of the same names)."""

    epochs: int
    steps_per_epoch: int
    batch_size: int
    log_interval: int = 50
    save_checkpoint: bool = True
    save_checkpoint_epochs: int = 1
    run_eval: bool = False
    eval_start_epoch: int = 1
    eval_interval: int = 1
    save_best_ckpt: bool = True

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def saves_at(self, epoch: int) -> bool:
        """Periodic checkpoint after ``epoch`` (1-based): every ``save_checkpoint_epochs``, and the last."""
        return self.save_checkpoint and (epoch % self.save_checkpoint_epochs == 0 or epoch == self.epochs)

    def evaluates_at(self, epoch: int) -> bool:
        """Validation after ``epoch``: at ``eval_start_epoch``, every ``eval_interval`` after it, and the last."""
        if not self.run_eval or epoch < self.eval_start_epoch:
            return False
        return (epoch - self.eval_start_epoch) % self.eval_interval == 0 or epoch == self.epochs


@dataclass
class TrainState:
    """Where a run stands: completed epochs and optimizer steps, best validation top-1 so far."""

    epoch: int = 0
    global_step: int = 0
    best_top1: float | None = None


@dataclass
class EpochResult:
    """What :func:`train_one_epoch` did: steps run, mean loss, time, throughput, whether it stopped early."""

    steps: int
    mean_loss: float
    seconds: float
    images_per_sec: float
    stopped: bool = False


@dataclass
class FitResult:
    """How :func:`fit` ended: the final state, the signal that stopped it (if any), the last checkpoint."""

    state: TrainState
    stopped_by: str | None = None
    last_checkpoint: Path | None = None
    history: List[Dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- the loop
def batch_stream(dataset: Any, steps_needed: int, steps_per_dataset_epoch: int) -> Iterator[tuple]:
    """Yield ``steps_needed`` batches from ``dataset``, passing through as many of its epochs as needed.

    One MindSpore iterator serves the whole run, so a training epoch shorter than the dataset's
    (``train_steps_per_epoch``, or the remainder of an epoch after a mid-epoch resume) simply continues
    where the previous one stopped, and the pipeline reshuffles at each of its own epoch boundaries.
    """
    if steps_needed <= 0:
        return
    if steps_per_dataset_epoch <= 0:
        raise DropCovError("the training split yields no full batch: lower batch_size or add images")
    num_epochs = -(-steps_needed // steps_per_dataset_epoch)
    iterator = dataset.create_tuple_iterator(num_epochs=num_epochs, output_numpy=False)
    yielded = 0
    for _ in range(num_epochs):
        for batch in iterator:
            yield batch
            yielded += 1
            if yielded == steps_needed:
                return


class _LossWindow:
    """Loss tensors of the steps since the last host sync, read (and checked) together."""

    def __init__(self, group_size: int) -> None:
        self.losses: List[Tensor] = []
        self.first_global_step = 0
        self.group_size = group_size

    def add(self, loss: Tensor, global_step: int) -> None:
        if not self.losses:
            self.first_global_step = global_step
        self.losses.append(loss)

    def sync(self, stop_requested: bool) -> tuple:
        """Read the window: ``(losses averaged over ranks, any rank asked to stop)``; clears it.

        One host sync; in a data-parallel run one all-reduce of ``[losses..., stop flag]``."""
        local = ops.stack(self.losses).asnumpy().astype(np.float32).reshape(-1) if self.losses \
            else np.zeros(0, np.float32)
        self.losses = []
        if self.group_size == 1:
            return local.astype(np.float64), stop_requested
        total = sum_over_ranks(np.concatenate([local, np.array([1.0 if stop_requested else 0.0], np.float32)]))
        return total[:-1] / self.group_size, bool(total[-1] > 0)


def _check_finite(losses: np.ndarray, first_global_step: int, epoch: int, settings: TrainSettings,
                  last_checkpoint: Path | None) -> None:
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size == 0:
        return
    global_step = first_global_step + int(bad[0]) + 1  # 1-based: the step that produced the loss
    step_in_epoch = global_step - (epoch - 1) * settings.steps_per_epoch
    kept = (f"the last good checkpoint {last_checkpoint} is kept (resume from it with --resume auto after "
            "the fix)") if last_checkpoint else "no checkpoint had been written yet"
    raise DropCovError(f"training diverged: the loss is {losses[bad[0]]} at global step {global_step} "
                       f"(epoch {epoch}/{settings.epochs}, step {step_in_epoch}/{settings.steps_per_epoch}); "
                       "lower lr_max or loss_scale, or check amp_level and the data; "
                       f"{kept}")


def train_one_epoch(train_step: nn.Cell, batches: Iterator[tuple], epoch: int, first_step: int,
                    settings: TrainSettings, state: TrainState, lr_schedule: np.ndarray,
                    meter: ThroughputMeter, metrics: MetricsWriter, group_size: int = 1,
                    stop: Any = None, last_checkpoint: Path | None = None,
                    run_started: float | None = None) -> EpochResult:
    """Run steps ``first_step+1 .. steps_per_epoch`` of ``epoch`` (1-based), updating ``state.global_step``.

    Per step: one call of the compiled ``train_step``; its loss tensor is kept, not read. At every
    ``log_interval``-th step and at the last step of the epoch the window of losses is read, checked for
    NaN/Inf (raises :class:`DropCovError` naming the first bad step) and logged with the learning rate of
    the last step, the images per second of all ranks and the time left. ``stop`` (a StopRequest) ends the
    epoch early at a step boundary (single process) or at the next logging point (data parallel);
    ``EpochResult.stopped`` then says so and the caller writes the checkpoint.
    """
    started = time.perf_counter()
    run_started = run_started or started
    window = _LossWindow(group_size)
    loss_sum, loss_count, steps_run = 0.0, 0, 0
    images_per_sec = float("nan")
    stopped = False
    steps = settings.steps_per_epoch
    for step in range(first_step + 1, steps + 1):
        images, labels = next(batches)[:2]
        window.add(_loss_of(train_step(images, labels)), state.global_step)
        state.global_step += 1
        steps_run += 1
        meter.step()
        local_stop = bool(stop is not None and stop.requested)
        at_log_point = step % settings.log_interval == 0 or step == steps
        if not at_log_point and not (local_stop and group_size == 1):
            continue
        losses, stop_now = window.sync(local_stop)
        _check_finite(losses, window.first_global_step, epoch, settings, last_checkpoint)
        loss_sum += float(losses.sum())
        loss_count += losses.size
        images_per_sec = meter.close_window()
        lr = float(lr_schedule[min(state.global_step, len(lr_schedule)) - 1])
        eta = meter.eta(settings.total_steps - state.global_step)
        logger.info("epoch %d/%d step %d/%d loss %.4f lr %.6g | %.1f img/s | ETA %s", epoch, settings.epochs,
                    step, steps, float(losses.mean()), lr, images_per_sec, format_duration(eta))
        metrics.write("step", epoch=epoch, step=step, global_step=state.global_step, loss=float(losses.mean()),
                      lr=lr, images_per_sec=images_per_sec, time=time.perf_counter() - run_started)
        if stop_now:
            if stop is not None:
                stop.request(stop.signal_name or "SIGTERM")  # another rank's request counts here too
            stopped = True
            break
    seconds = time.perf_counter() - started
    mean_loss = loss_sum / loss_count if loss_count else float("nan")
    epoch_images_per_sec = steps_run * meter.images_per_step / seconds if seconds > 0 else float("nan")
    return EpochResult(steps=steps_run, mean_loss=mean_loss, seconds=seconds,
                       images_per_sec=epoch_images_per_sec if steps_run else images_per_sec, stopped=stopped)


def parameters_finite(net: nn.Cell) -> bool:
    """Whether every parameter of ``net`` is finite (checked before a checkpoint is written)."""
    return all(bool(np.isfinite(param.asnumpy()).all()) for param in net.get_parameters()
               if param.dtype in (ms.float16, ms.float32, ms.float64, ms.bfloat16))


def fit(train_step: nn.Cell, net: nn.Cell, train_bundle: Any, settings: TrainSettings, lr_schedule: np.ndarray,
        parallel: Any = None, state: TrainState | None = None, eval_bundle: Any = None,
        checkpoints: Any = None, checkpoint_extra: Mapping[str, Any] | None = None,
        metrics: MetricsWriter | None = None, plot_path: Path | None = None, stop: Any = None,
        resume_hint: str = "") -> FitResult:
    """Train from ``state`` (epoch, global step) to ``settings.epochs``; checkpoint, evaluate and plot.

    Args:
        train_step: from :func:`build_train_step`; its optimizer's ``global_step`` must equal
            ``state.global_step`` (restored on resume), so the per-step ``lr_schedule`` lines up.
        net: the network inside ``train_step`` (evaluated and checked for finite weights).
        train_bundle: training :class:`src.data.DatasetBundle` (``.dataset``, ``.steps_per_epoch``).
        settings: epochs, steps per epoch (possibly limited by ``train_steps_per_epoch``), schedules.
        lr_schedule: the per-step learning rates the optimizer was built with (logged, not applied).
        parallel: :class:`src.runtime.distributed.ParallelInfo`; None for a single process.
        state: where to start (a resumed run's epoch/global step/best top-1); None = from scratch.
        eval_bundle: validation bundle when ``settings.run_eval``.
        checkpoints: a :class:`src.runtime.checkpoint.CheckpointManager` on rank 0, None elsewhere.
        checkpoint_extra: run state written into every checkpoint (``config`` text, ``steps_per_epoch``).
        metrics: the ``metrics.jsonl`` writer (disabled on ranks other than 0).
        plot_path: PNG of the training curves, redrawn after each epoch (rank 0); None = no plot.
        stop: a :class:`src.runtime.signals.StopRequest`; a request ends the run after a checkpoint.
        resume_hint: the command line that continues this run, logged when it stops early.

    Epoch ``e`` (1-based) ends with, in order: the epoch summary line and record; the validation pass
    when :meth:`TrainSettings.evaluates_at` (all ranks, counts all-reduced); the periodic checkpoint when
    :meth:`TrainSettings.saves_at` (rank 0); ``best.ckpt`` when top-1 improved and ``save_best_ckpt``;
    the plot.
    """
    from src.engine.plots import plot_training_curves

    state = state or TrainState()
    group_size = getattr(parallel, "group_size", 1) if parallel is not None else 1
    is_main = getattr(parallel, "rank", 0) == 0 if parallel is not None else True
    metrics = metrics or MetricsWriter(Path("metrics.jsonl"), enabled=False)
    result = FitResult(state=state)
    steps_per_epoch = settings.steps_per_epoch
    steps_left = settings.total_steps - state.global_step
    if steps_left <= 0:
        logger.info("nothing to train: global step %d already reaches the %d steps of %d epochs",
                    state.global_step, settings.total_steps, settings.epochs)
        return result
    if checkpoints is not None:
        existing = checkpoints.periodic_checkpoints()
        result.last_checkpoint = existing[-1] if existing else None
    extra = dict(checkpoint_extra or {})
    run_started = time.perf_counter()
    meter = ThroughputMeter(settings.batch_size * group_size)
    batches = batch_stream(train_bundle.dataset, steps_left, train_bundle.steps_per_epoch)
    metrics.write("start", epoch=state.epoch, global_step=state.global_step, epochs=settings.epochs,
                  steps_per_epoch=steps_per_epoch, images_per_step=settings.batch_size * group_size)
    train_step.set_train(True)
    try:
        for epoch in range(state.global_step // steps_per_epoch + 1, settings.epochs + 1):
            first_step = state.global_step - (epoch - 1) * steps_per_epoch
            summary = train_one_epoch(train_step, batches, epoch, first_step, settings, state, lr_schedule,
                                      meter, metrics, group_size, stop, result.last_checkpoint, run_started)
            saved_at_stop_step = False
            if state.global_step == epoch * steps_per_epoch:
                saved_at_stop_step = _end_epoch(epoch, summary, train_step, net, settings, state, lr_schedule,
                                                parallel, eval_bundle, checkpoints, extra, metrics, result,
                                                is_main)
                if plot_path is not None and is_main:
                    _plot(plot_training_curves, metrics, plot_path, steps_per_epoch)
            if summary.stopped:
                result.stopped_by = getattr(stop, "signal_name", None) or "stop request"
                if not saved_at_stop_step:
                    _save_on_stop(net, train_step, checkpoints, state, epoch, settings, extra, result, is_main)
                where = (f"epoch {epoch}/{settings.epochs} step {state.global_step - (epoch - 1) * steps_per_epoch}"
                         f"/{steps_per_epoch} (global step {state.global_step})")
                if is_main:
                    saved = f"checkpoint {result.last_checkpoint}" if result.last_checkpoint else "no checkpoint"
                    logger.warning("stopped by %s at %s; %s; continue with: %s", result.stopped_by, where, saved,
                                   resume_hint or "the same command plus --resume auto")
                metrics.write("stop", epoch=state.epoch, global_step=state.global_step, reason=result.stopped_by)
                return result
            meter.restart_window()
    finally:
        batches.close()
    metrics.write("end", epoch=state.epoch, global_step=state.global_step, best_top1=state.best_top1)
    return result


def _end_epoch(epoch: int, summary: EpochResult, train_step: nn.Cell, net: nn.Cell, settings: TrainSettings,
               state: TrainState, lr_schedule: np.ndarray, parallel: Any, eval_bundle: Any, checkpoints: Any,
               extra: Mapping[str, Any], metrics: MetricsWriter, result: FitResult, is_main: bool) -> bool:
    """Summary, validation, periodic and best checkpoints after a completed epoch; True if a periodic
    checkpoint was written."""
    state.epoch = epoch
    lr = float(lr_schedule[state.global_step - 1])
    logger.info("epoch %d/%d done: mean loss %.4f, %s, %.1f img/s", epoch, settings.epochs,
                summary.mean_loss, format_duration(summary.seconds), summary.images_per_sec)
    metrics.write("epoch", epoch=epoch, global_step=state.global_step, loss=summary.mean_loss, lr=lr,
                  epoch_time=summary.seconds, images_per_sec=summary.images_per_sec)
    record: Dict[str, Any] = {"epoch": epoch, "loss": summary.mean_loss, "lr": lr}
    improved = False
    if settings.evaluates_at(epoch) and eval_bundle is not None:
        scores = evaluate(net, eval_bundle, parallel)
        train_step.set_train(True)
        improved = state.best_top1 is None or scores["top1"] > state.best_top1
        if improved:
            state.best_top1 = scores["top1"]
        logger.info("epoch %d/%d val top-1 %.2f%% top-5 %.2f%% loss %.4f (%d images, %s); best top-1 %.2f%%",
                    epoch, settings.epochs, 100 * scores["top1"], 100 * scores["top5"], scores["loss"],
                    scores["count"], format_duration(scores["seconds"]), 100 * state.best_top1)
        metrics.write("eval", epoch=epoch, global_step=state.global_step, top1=scores["top1"], top5=scores["top5"],
                      loss=scores["loss"], count=scores["count"])
        record.update(top1=scores["top1"], top5=scores["top5"])
    result.history.append(record)
    if checkpoints is None or not is_main:
        return False
    save_periodic = settings.saves_at(epoch)
    save_best = improved and settings.save_best_ckpt and settings.run_eval
    if save_periodic or save_best:
        _require_finite_weights(net, state, epoch, settings, result.last_checkpoint)
    checkpoints.best_metric = state.best_top1
    entries = {**extra, "step_num": 0}
    if save_periodic:
        result.last_checkpoint = checkpoints.save(train_step, epoch, state.global_step, entries)
        logger.info("saved checkpoint %s", result.last_checkpoint)
    if save_best:
        checkpoints.best_metric = None if state.best_top1 is None else state.best_top1 - 1.0  # force the write
        checkpoints.save_best(train_step, state.best_top1, epoch, state.global_step, entries)
        logger.info("saved %s (top-1 %.2f%%)", checkpoints.best_path, 100 * state.best_top1)
    return save_periodic


def _plot(plot_fn, metrics: MetricsWriter, plot_path: Path, steps_per_epoch: int) -> None:
    try:
        plot_fn(metrics.path, plot_path, steps_per_epoch)
    except (OSError, ValueError, RuntimeError) as error:  # a plot must never stop training
        logger.warning("could not draw %s: %s", plot_path, error)


def _require_finite_weights(net: nn.Cell, state: TrainState, epoch: int, settings: TrainSettings,
                            last_checkpoint: Path | None) -> None:
    if parameters_finite(net):
        return
    kept = f"the last good checkpoint {last_checkpoint} is kept" if last_checkpoint else "no checkpoint was written"
    raise DropCovError(f"training diverged: the weights hold NaN/Inf after global step {state.global_step} "
                       f"(end of epoch {epoch}/{settings.epochs}) although the logged losses were finite; "
                       f"lower lr_max or loss_scale; {kept}")


def _save_on_stop(net: nn.Cell, train_step: nn.Cell, checkpoints: Any, state: TrainState, epoch: int,
                  settings: TrainSettings, extra: Mapping[str, Any], result: FitResult, is_main: bool) -> None:
    """Checkpoint the exact step at which a stop request was honoured (rank 0 only)."""
    if checkpoints is None or not is_main:
        return
    if not parameters_finite(net):
        logger.error("weights are not finite at global step %d: no checkpoint written", state.global_step)
        return
    checkpoints.best_metric = state.best_top1
    step_in_epoch = state.global_step - (epoch - 1) * settings.steps_per_epoch
    result.last_checkpoint = checkpoints.save(train_step, state.epoch, state.global_step,
                                              {**extra, "step_num": step_in_epoch})


# ------------------------------------------------------------------------------------------- resuming
def restore_training_state(net: nn.Cell, train_step: nn.Cell, optimizer: nn.Optimizer,
                           param_dict: Mapping[str, Any], source: str, steps_per_epoch: int,
                           total_steps: int) -> TrainState:
    """Load a training checkpoint into the network, optimizer (moments, global step) and loss scale.

    Checks that the checkpoint was written with the same ``steps_per_epoch`` (same data, batch size,
    device count and ``train_steps_per_epoch``) so the global step means the same epoch and learning
    rate, and that it lies within this run's ``total_steps``. Returns the state to continue from.
    """
    from src.runtime.checkpoint import (
        load_network_weights,
        read_extra,
        read_resume_state,
        restore_optimizer_state,
    )

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
    best = read_extra(param_dict, "best_metric")
    return TrainState(epoch=epoch_num, global_step=global_step, best_top1=None if best is None else float(best))


def _restore_loss_scale(train_step: nn.Cell, param_dict: Mapping[str, Any]) -> None:
    """Copy a dynamic loss scale's state (``scale_sense`` and its counters) when both sides have it."""
    for param in train_step.get_parameters():
        if param.name in ("scale_sense", "current_iterator_step", "last_overflow_iterator_step") \
                and param.name in param_dict:
            value = param_dict[param.name]
            param.set_data(Tensor(np.asarray(value.asnumpy() if hasattr(value, "asnumpy") else value,
                                             dtype=ms.dtype_to_nptype(param.dtype)).reshape(param.shape)))


def config_differences(saved_yaml: str | None, current: Mapping[str, Any],
                       ignore: Sequence[str] = ("resume", "pre_trained", "output_path", "checkpoint_path",
                                                "data_path", "eval_dataset_path", "device_id", "log_interval",
                                                "num_parallel_workers", "run_eval", "eval_start_epoch",
                                                "eval_interval")) -> List[str]:
    """``key: saved -> current`` for config keys that differ from a checkpoint's saved config.

    Logged as warnings on resume: a changed ``epoch_size`` stretches a cosine/linear/poly schedule, a changed
    ``lr_max`` or ``amp_level`` changes the optimisation. Paths and logging options are not reported."""
    if not saved_yaml:
        return []
    import yaml

    try:
        saved = yaml.safe_load(saved_yaml) or {}
    except yaml.YAMLError:
        return []
    return [f"{key}: {saved[key]!r} -> {value!r}" for key, value in current.items()
            if key in saved and key not in ignore and saved[key] != value]

