"""The training loop: :class:`Trainer` runs epochs of a compiled train step, logs, evaluates and checkpoints.

Host synchronisation happens only at the logging interval (and at epoch end): the loss tensors of the
steps in between are kept on the device and read together. At each such point the loop

- checks that every loss of the window is finite (a NaN/Inf stops the run with a :class:`DropCovError`
  naming the first bad global step; detection lags by at most ``log_interval`` steps, the step named
  is exact),
- in a data-parallel run, averages the window's losses over the ranks and agrees on a stop request
  (one small all-reduce), so every rank logs, stops and fails at the same step,
- logs ``epoch e/E step s/S loss lr images/s ETA`` and appends a ``metrics.jsonl`` record.

A stop request (SIGTERM/SIGINT, :class:`src.runtime.signals.StopRequest`) is honoured at the next step
boundary in a single process; in a data-parallel run the ranks agree on it every
:data:`STOP_CHECK_STEPS` steps (mpirun kills its ranks a few seconds after forwarding a signal): rank 0
writes a checkpoint holding the exact global step, then the run returns. Checkpoints are only written by rank 0
and never with a non-finite loss or weights, so the last checkpoint on disk is always a good one.
Resuming is :mod:`src.engine.resume`; the order of the training images after a resume is not the
uninterrupted run's (MindSpore's pipeline starts its shuffle sequence again).

With ``accumulation_steps = k`` one optimizer step is k calls of the train step on k batches (a global step
counts optimizer steps; the logged loss is the mean of the k batches'). With a model EMA in the train step
(:class:`src.engine.ema.ModelEma`) every validation pass scores the EMA weights next to the raw ones;
``best.ckpt`` keeps the better of the two and names it in its ``best_weights`` entry.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from src.engine.evaluate import evaluate
from src.engine.lr_schedule import lr_at_step
from src.engine.metrics import MetricsWriter, ThroughputMeter, format_duration
from src.engine.resume import TrainState
from src.engine.train_settings import EpochResult, FitResult, TrainSettings, batch_stream
from src.engine.train_step import loss_of
from src.errors import DropCovError
from src.models.ema_weights import BEST_WEIGHTS_ENTRY
from src.runtime.distributed import ParallelInfo, sum_over_ranks

logger = logging.getLogger(__name__)

STOP_CHECK_STEPS = 4
"""In a data-parallel run the ranks read their losses and agree on a stop request at least this often."""


class _LossWindow:
    """Loss tensors of the steps since the last host sync, read (and checked) together."""

    def __init__(self, group_size: int) -> None:
        self.losses: list[Tensor] = []
        self.first_global_step = 0
        self.group_size = group_size

    def add(self, loss: Tensor, global_step: int) -> None:
        if not self.losses:
            self.first_global_step = global_step
        self.losses.append(loss)

    def sync(self, stop_requested: bool) -> tuple[np.ndarray, bool]:
        """Read the window: ``(losses averaged over ranks, any rank asked to stop)``; clears it.

        One host sync; in a data-parallel run one all-reduce of ``[losses..., stop flag]``."""
        local = ops.stack(self.losses).asnumpy().astype(np.float32).reshape(-1) if self.losses \
            else np.zeros(0, np.float32)
        self.losses = []
        if self.group_size == 1:
            return local.astype(np.float64), stop_requested
        total = sum_over_ranks(np.concatenate([local, np.array([1.0 if stop_requested else 0.0], np.float32)]))
        return total[:-1] / self.group_size, bool(total[-1] > 0)


class _LogWindow:
    """Losses read since the last log line (a data-parallel run reads more often than it logs)."""

    def __init__(self) -> None:
        self.losses: list[np.ndarray] = []

    def add(self, losses: np.ndarray) -> None:
        self.losses.append(losses)

    def take(self) -> np.ndarray:
        losses = np.concatenate(self.losses) if self.losses else np.zeros(0)
        self.losses = []
        return losses


def parameters_finite(net: nn.Cell) -> bool:
    """Whether every parameter of ``net`` is finite (checked before a checkpoint is written)."""
    return all(bool(np.isfinite(param.asnumpy()).all()) for param in net.get_parameters()
               if param.dtype in (ms.float16, ms.float32, ms.float64, ms.bfloat16))


class Trainer:
    """Trains ``net`` through ``train_step`` from a :class:`TrainState` to ``settings.epochs``.

    Args:
        train_step: from :func:`src.engine.train_step.build_train_step`; its optimizer's ``global_step``
            must equal the state's (restored on resume), so the per-step ``lr_schedule`` lines up.
        net: the network inside ``train_step`` (evaluated and checked for finite weights).
        settings: epochs, steps per epoch (possibly limited by ``train_steps_per_epoch``), schedules.
        lr_schedule: the per-step learning rates the optimizer was built with (logged, not applied).
        parallel: where this process sits in a data-parallel job (default: a single process).
        checkpoints: a :class:`src.runtime.checkpoint.CheckpointManager` on rank 0, None elsewhere.
        metrics: the ``metrics.jsonl`` writer (disabled on ranks other than 0).
        plot_path: PNG of the training curves, redrawn after each epoch (rank 0); None = no plot.
        checkpoint_extra: run state written into every checkpoint (``config`` text, ``steps_per_epoch``).
        stop: a :class:`src.runtime.signals.StopRequest`; a request ends the run after a checkpoint.
        resume_hint: the command line that continues this run, logged when it stops early.

    Epoch ``e`` (1-based) ends with, in order: the epoch summary line and record; the validation pass
    when :meth:`TrainSettings.evaluates_at` (all ranks, counts all-reduced); the periodic checkpoint when
    :meth:`TrainSettings.saves_at` (rank 0); ``best.ckpt`` when top-1 improved and ``save_best_ckpt``;
    the plot.
    """

    def __init__(self, train_step: nn.Cell, net: nn.Cell, settings: TrainSettings, lr_schedule: np.ndarray,
                 parallel: ParallelInfo | None = None, checkpoints: Any = None, metrics: MetricsWriter | None = None,
                 plot_path: Path | None = None, checkpoint_extra: Mapping[str, Any] | None = None,
                 stop: Any = None, resume_hint: str = "") -> None:
        self.train_step, self.net, self.settings, self.lr_schedule = train_step, net, settings, lr_schedule
        self.parallel = parallel or ParallelInfo()
        self.checkpoints = checkpoints if self.parallel.is_main else None
        self.metrics = metrics or MetricsWriter(Path("metrics.jsonl"), enabled=False)
        self.plot_path = plot_path if self.parallel.is_main else None
        self.extra = dict(checkpoint_extra or {})
        self.stop, self.resume_hint = stop, resume_hint
        self.state = TrainState()
        self.result = FitResult(state=self.state)
        self.meter = ThroughputMeter(self.images_per_step)
        self.best_weights = "raw"  # which weights scored the best top-1 so far
        self.run_started = time.perf_counter()

    @property
    def images_per_step(self) -> int:
        """Images of one optimizer step over all ranks: batch x ranks x accumulation steps."""
        return self.settings.batch_size * self.parallel.group_size * self.settings.accumulation_steps

    # ------------------------------------------------------------------------------------------- the run
    def fit(self, train_bundle: Any, state: TrainState | None = None, eval_bundle: Any = None) -> FitResult:
        """Train from ``state`` (epoch, global step; None = from scratch) to the last epoch.

        ``train_bundle`` is the training :class:`src.data.DatasetBundle`; ``eval_bundle`` the validation
        one when ``settings.run_eval``.
        """
        self.state = state or TrainState()
        self.result = FitResult(state=self.state)
        self.eval_bundle = eval_bundle
        settings, steps_per_epoch = self.settings, self.settings.steps_per_epoch
        steps_left = settings.total_steps - self.state.global_step
        if steps_left <= 0:
            logger.info("nothing to train: global step %d already reaches the %d steps of %d epochs",
                        self.state.global_step, settings.total_steps, settings.epochs)
            return self.result
        if self.checkpoints is not None:
            existing = self.checkpoints.periodic_checkpoints()
            self.result.last_checkpoint = existing[-1] if existing else None
        self.run_started = time.perf_counter()
        batches = batch_stream(train_bundle.dataset, steps_left * settings.accumulation_steps,
                               train_bundle.steps_per_epoch)
        self.metrics.write("start", epoch=self.state.epoch, global_step=self.state.global_step,
                           epochs=settings.epochs, steps_per_epoch=steps_per_epoch,
                           images_per_step=self.images_per_step)
        self.train_step.set_train(True)
        graceful_before = getattr(self.stop, "graceful", None)
        if graceful_before is not None:
            self.stop.graceful = True  # a signal now asks for a checkpoint and a clean stop
        try:
            for epoch in range(self.state.global_step // steps_per_epoch + 1, settings.epochs + 1):
                summary = self.train_one_epoch(batches, epoch)
                saved_at_stop_step = False
                if self.state.global_step == epoch * steps_per_epoch:
                    saved_at_stop_step = self._end_epoch(epoch, summary)
                if summary.stopped:
                    self._stop(epoch, saved_at_stop_step, summary)
                    return self.result
                self.meter.restart_window()
        finally:
            batches.close()
            if graceful_before is not None:
                self.stop.graceful = graceful_before
        self.metrics.write("end", epoch=self.state.epoch, global_step=self.state.global_step,
                           best_top1=self.state.best_top1)
        return self.result

    def train_one_epoch(self, batches: Iterator[tuple], epoch: int) -> EpochResult:
        """Run the remaining steps of ``epoch`` (1-based), updating ``state.global_step``.

        Per step: ``accumulation_steps`` calls of the compiled ``train_step`` (one optimizer update); the mean
        loss tensor is kept, not read. At every
        ``log_interval``-th step and at the last step of the epoch the window of losses is read, checked for
        NaN/Inf and logged with the learning rate of the last step, the images per second of all ranks and
        the time left. A stop request ends the epoch early at a step boundary (single process) or at the
        next :data:`STOP_CHECK_STEPS` boundary (data parallel); ``EpochResult.stopped`` then says so.
        """
        settings, state, group_size = self.settings, self.state, self.parallel.group_size
        started = time.perf_counter()
        window, log_window = _LossWindow(group_size), _LogWindow()
        loss_sum, loss_steps = state.epoch_loss_sum, state.epoch_loss_steps  # a resumed epoch's earlier steps
        state.epoch_loss_sum, state.epoch_loss_steps = 0.0, 0
        steps_run, images_per_sec, stopped = 0, float("nan"), False
        steps = settings.steps_per_epoch
        for step in range(state.global_step - (epoch - 1) * steps + 1, steps + 1):
            window.add(self._optimizer_step(batches), state.global_step)
            state.global_step += 1
            steps_run += 1
            self.meter.step()
            at_log_point = step % settings.log_interval == 0 or step == steps
            if group_size == 1:
                local_stop = bool(self.stop is not None and self.stop.requested)
                if not (at_log_point or local_stop):
                    continue
            elif not (at_log_point or step % STOP_CHECK_STEPS == 0):
                continue
            else:
                local_stop = bool(self.stop is not None and self.stop.requested)
            first_global_step = window.first_global_step
            losses, stop_now = window.sync(local_stop)
            self._check_finite(losses, first_global_step, epoch)
            loss_sum += float(losses.sum())
            loss_steps += losses.size
            log_window.add(losses)
            if at_log_point or stop_now:
                self._log_step(epoch, step, log_window.take())
            if stop_now:
                if self.stop is not None:
                    self.stop.request(self.stop.signal_name or "SIGTERM")  # another rank's request counts here
                stopped = True
                break
        seconds = time.perf_counter() - started
        epoch_images_per_sec = steps_run * self.meter.images_per_step / seconds if seconds > 0 else float("nan")
        return EpochResult(steps=steps_run, loss_sum=loss_sum, loss_steps=loss_steps, seconds=seconds,
                           images_per_sec=epoch_images_per_sec if steps_run else images_per_sec, stopped=stopped)

    def _log_step(self, epoch: int, step: int, losses: np.ndarray) -> None:
        """The log line and ``step`` record of a logging point (``losses``: the steps since the last one)."""
        settings, state = self.settings, self.state
        images_per_sec = self.meter.close_window()
        lr = lr_at_step(self.lr_schedule, min(state.global_step, len(self.lr_schedule)) - 1)
        eta = self.meter.eta(settings.total_steps - state.global_step)
        logger.info("epoch %d/%d step %d/%d loss %.4f lr %.6g | %.1f img/s | ETA %s", epoch, settings.epochs,
                    step, settings.steps_per_epoch, float(losses.mean()), lr, images_per_sec, format_duration(eta))
        self.metrics.write("step", epoch=epoch, step=step, global_step=state.global_step, loss=float(losses.mean()),
                           lr=lr, images_per_sec=images_per_sec, time=time.perf_counter() - self.run_started)

    def _optimizer_step(self, batches: Iterator[tuple]) -> Tensor:
        """One optimizer step: ``accumulation_steps`` calls of the train step; their mean loss (not read)."""
        losses = [loss_of(self.train_step(*next(batches)[:2])) for _ in range(self.settings.accumulation_steps)]
        return losses[0] if len(losses) == 1 else ops.addn(losses) / len(losses)

    # --------------------------------------------------------------------------------- epoch end, stop
    def _end_epoch(self, epoch: int, summary: EpochResult) -> bool:
        """Summary, validation, periodic and best checkpoints, plot; True if a periodic checkpoint was written."""
        settings, state = self.settings, self.state
        state.epoch = epoch
        lr = lr_at_step(self.lr_schedule, state.global_step - 1)
        logger.info("epoch %d/%d done: mean loss %.4f, %s, %.1f img/s", epoch, settings.epochs,
                    summary.mean_loss, format_duration(summary.seconds), summary.images_per_sec)
        self.metrics.write("epoch", epoch=epoch, global_step=state.global_step, loss=summary.mean_loss, lr=lr,
                           epoch_time=summary.seconds, images_per_sec=summary.images_per_sec)
        improved = settings.evaluates_at(epoch) and self.eval_bundle is not None and self._evaluate(epoch)
        saved = False
        if self.checkpoints is not None:
            save_best = improved and settings.save_best_ckpt
            saved = settings.saves_at(epoch)
            if saved or save_best:
                self._require_finite_weights(epoch)
            entries = self._entries(step_num=0)
            if saved:
                self.result.last_checkpoint = self.checkpoints.save(self.train_step, epoch, state.global_step,
                                                                    entries)
                logger.info("saved checkpoint %s", self.result.last_checkpoint)
            if save_best and self.checkpoints.save_best(self.train_step, state.best_top1, epoch, state.global_step,
                                                        {**entries, BEST_WEIGHTS_ENTRY: self.best_weights}):
                logger.info("saved %s (top-1 %.2f%% of the %s weights)", self.checkpoints.best_path,
                            100 * state.best_top1, self.best_weights)
        if self.plot_path is not None:
            self._plot()
        return saved

    def _evaluate(self, epoch: int) -> bool:
        """Score the validation split (with the raw weights, then the EMA's if the step keeps one); returns
        whether the best top-1 so far improved (and sets :attr:`best_weights` to the weights that did it)."""
        state = self.state
        scored = {"raw": evaluate(self.net, self.eval_bundle, self.parallel)}
        ema = getattr(self.train_step, "ema", None)
        if ema is not None:
            with ema.applied():
                scored["ema"] = evaluate(self.net, self.eval_bundle, self.parallel)
        self.train_step.set_train(True)
        weights, best = max(scored.items(), key=lambda item: item[1]["top1"])  # raw first: it wins a tie
        improved = state.best_top1 is None or best["top1"] > state.best_top1
        if improved:
            state.best_top1, self.best_weights = best["top1"], weights
        for name, scores in scored.items():
            label = "" if name == "raw" else f" ({name})"
            logger.info("epoch %d/%d val%s top-1 %.2f%% top-5 %.2f%% loss %.4f (%d images, %s); best top-1 %.2f%%",
                        epoch, self.settings.epochs, label, 100 * scores["top1"], 100 * scores["top5"],
                        scores["loss"], scores["count"], format_duration(scores["seconds"]), 100 * state.best_top1)
        record = {"top1": scored["raw"]["top1"], "top5": scored["raw"]["top5"], "loss": scored["raw"]["loss"],
                  "count": scored["raw"]["count"]}
        if "ema" in scored:
            record.update(top1_ema=scored["ema"]["top1"], top5_ema=scored["ema"]["top5"], loss_ema=scored["ema"]["loss"])
        self.metrics.write("eval", epoch=epoch, global_step=state.global_step, **record)
        return improved

    def _entries(self, step_num: int) -> dict[str, Any]:
        """What a checkpoint carries besides the parameters (the best top-1 once there is one)."""
        entries = {**self.extra, "step_num": step_num}
        if self.state.best_top1 is not None:
            entries["best_metric"] = float(self.state.best_top1)
        return entries

    def _stop(self, epoch: int, saved_at_stop_step: bool, summary: EpochResult) -> None:
        """A stop request was honoured: checkpoint the exact step (rank 0), say how to continue."""
        state, steps_per_epoch = self.state, self.settings.steps_per_epoch
        self.result.stopped_by = getattr(self.stop, "signal_name", None) or "stop request"
        step_in_epoch = state.global_step - (epoch - 1) * steps_per_epoch
        if not saved_at_stop_step and self.checkpoints is not None:
            if parameters_finite(self.net):
                entries = {**self._entries(step_num=step_in_epoch), "epoch_loss_sum": summary.loss_sum,
                           "epoch_loss_steps": summary.loss_steps}
                self.result.last_checkpoint = self.checkpoints.save(self.train_step, state.epoch, state.global_step,
                                                                    entries)
            else:
                logger.error("weights are not finite at global step %d: no checkpoint written", state.global_step)
        if self.parallel.is_main:
            saved = f"checkpoint {self.result.last_checkpoint}" if self.result.last_checkpoint else "no checkpoint"
            logger.warning("stopped by %s at epoch %d/%d step %d/%d (global step %d); %s; continue with: %s",
                           self.result.stopped_by, epoch, self.settings.epochs, step_in_epoch, steps_per_epoch,
                           state.global_step, saved, self.resume_hint or "the same command plus --resume auto")
        self.metrics.write("stop", epoch=state.epoch, global_step=state.global_step, reason=self.result.stopped_by)

    def _plot(self) -> None:
        from src.engine.plots import plot_training_curves

        try:
            plot_training_curves(self.metrics.path, self.plot_path, self.settings.steps_per_epoch)
        except (OSError, ValueError, RuntimeError) as error:  # a plot must never stop training
            logger.warning("could not draw %s: %s", self.plot_path, error)

    # ------------------------------------------------------------------------------------------ checks
    def _check_finite(self, losses: np.ndarray, first_global_step: int, epoch: int) -> None:
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size == 0:
            return
        settings = self.settings
        global_step = first_global_step + int(bad[0]) + 1  # 1-based: the step that produced the loss
        step_in_epoch = global_step - (epoch - 1) * settings.steps_per_epoch
        last = self.result.last_checkpoint
        kept = (f"the last good checkpoint {last} is kept (resume from it with --resume auto after the fix)"
                if last else "no checkpoint had been written yet")
        raise DropCovError(f"training diverged: the loss is {losses[bad[0]]} at global step {global_step} "
                           f"(epoch {epoch}/{settings.epochs}, step {step_in_epoch}/{settings.steps_per_epoch}); "
                           f"lower lr_max or loss_scale, or check amp_level and the data; {kept}")

    def _require_finite_weights(self, epoch: int) -> None:
        if parameters_finite(self.net):
            return
        last = self.result.last_checkpoint
        kept = f"the last good checkpoint {last} is kept" if last else "no checkpoint was written"
        raise DropCovError(f"training diverged: the weights hold NaN/Inf after global step {self.state.global_step} "
                           f"(end of epoch {epoch}/{self.settings.epochs}) although the logged losses were finite; "
                           f"lower lr_max or loss_scale; {kept}")
