"""Train a DropCov (or GAP) network on one device or data-parallel across processes.

  python train.py --config_path config/resnet50_imagenet2012_config.yaml --data_path /data/imagenet \\
      --device_target GPU --output_path ./output
  mpirun -n 4 python train.py --config_path ... --run_distribute=True --device_num=4 --device_target=GPU ...
  msrun --worker_num=2 --local_worker_num=2 --master_addr=127.0.0.1 --master_port=8118 --join=True \\
      train.py --config_path ... --run_distribute=True --device_target=CPU ...
  python train.py --config_path ... --output_path ./output --resume auto     # continue a stopped run

The output folder receives config.yaml, class_indices.json, train.log, metrics.jsonl, metrics.png and
checkpoints/ (rank 0 only). SIGTERM or Ctrl-C saves a checkpoint and stops; --resume auto continues it.
"""
from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from src.cli import run_entry_point
from src.errors import DropCovError

if TYPE_CHECKING:  # the config (and NumPy with it) is imported once run_entry_point has set up signals
    from src.config import Config

logger = logging.getLogger("train")


def resume_command(argv: Sequence[str]) -> str:
    """This run's command line with ``--resume auto`` in place of any ``--resume`` option."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            kept.append(arg)
    return " ".join(["python train.py", *map(shlex.quote, kept), "--resume auto"])


def build_datasets(config: Config, parallel: Any, run_classes: Sequence[str] | None = None,
                   augment: Any = None) -> tuple:
    """Training bundle (sharded by rank, shuffled, augmented by ``augment``, an
    :class:`src.data.recipe.AugmentSettings`) and, with run_eval, the validation bundle (labelled by the
    training classes; each rank scores a disjoint share; :func:`src.engine.evaluate.evaluate` sums the counts).
    ``run_classes``: a resumed run's own classes, so a changed ``train/`` cannot shift labels."""
    from src.data import create_dataset, resolve_split_folder

    common = dict(num_parallel_workers=config.num_parallel_workers, num_shards=parallel.group_size,
                  shard_id=parallel.rank, seed=config.seed, safe_decode=config.safe_decode,
                  crop_pct=config.eval_crop_pct, eval_interpolation=config.eval_interpolation)
    train = create_dataset(config.dataset, config.data_path, "train", config.batch_size, config.train_image_size,
                           crop_min_scale=config.train_crop_min_scale, hflip=config.train_hflip,
                           class_names=run_classes, augment=augment, num_classes=config.class_num, **common)
    if config.class_num < len(train.class_names):
        raise DropCovError(f"class_num={config.class_num} but {train.source} has {len(train.class_names)} classes; "
                           f"set --class_num {len(train.class_names)} (or more)")
    val = None
    if config.run_eval:
        val_folder = resolve_split_folder(config.data_path, "val", config.eval_dataset_path)
        if os.path.realpath(val_folder) == os.path.realpath(train.source):
            raise DropCovError(f"data_path {config.data_path} has no val/ folder, so validation would score the "
                               f"training images of {train.source}; give the validation images with "
                               "--eval_dataset_path FOLDER, or train without validation: --run_eval False")
        val = create_dataset(config.dataset, config.data_path, "val", config.batch_size, config.eval_image_size,
                             eval_dataset_path=config.eval_dataset_path, class_names=train.class_names,
                             eval_resize_library=config.eval_resize_library, **common)
    return train, val


def build_training(config: Config, steps_per_epoch: int, conv_backend: str, rank: int = 0,
                   soft_targets: bool = False) -> tuple:
    """Network, per-step lr schedule, optimizer and compiled train step: ``(net, lr, optimizer, step)``.

    ``steps_per_epoch`` counts optimizer steps; ``soft_targets`` (Mixup/CutMix in the pipeline) picks the
    soft-target loss. Gradient accumulation, clipping or a model EMA make the step the recipe's
    (:func:`src.engine.train_step.create_train_step`), whose optimizer is built unscaled.

    The weights are drawn from ``config.seed`` at construction (MindSpore initialises Parameters eagerly outside
    auto-parallel), so every rank starts bit-identical; the random ops of the step (the DropCov masks) take
    their seed when the step graph is compiled, after the reseed with ``seed + rank`` at the end, so each
    rank drops its own channels instead of the same ones. The data pipeline keeps the shared seed.
    """
    import mindspore as ms
    import mindspore.dataset as ds

    from src.engine.ema import ModelEma
    from src.engine.loss import create_loss
    from src.engine.lr_schedule import create_lr_schedule
    from src.engine.optimizer import create_loss_scale_manager, create_optimizer
    from src.engine.train_step import create_train_step, optimizer_loss_scale_for, uses_recipe_step
    from src.kernels.swap import apply_conv_backend
    from src.models import create_model_from_config

    ms.set_seed(config.seed)
    net = create_model_from_config(config)
    apply_conv_backend(net, conv_backend, config.device_target, config.amp_level)
    lr_schedule = create_lr_schedule(config.lr_decay_mode, config.lr_init, config.lr_max, config.lr_end,
                                     config.warmup_epochs, config.epoch_size, steps_per_epoch,
                                     config.lr_milestones, config.lr_gamma, config.lr_power,
                                     unit=config.lr_schedule_unit, warmup_prefix=config.lr_warmup_prefix)
    late = [epoch for epoch in config.lr_milestones if epoch >= config.epoch_size]
    if config.lr_decay_mode == "multistep" and late:
        logger.warning("lr_milestones %s lie at or beyond epoch_size %d: the rate never decays there", late,
                       config.epoch_size)
    recipe_step = uses_recipe_step(config.accumulation_steps, config.clip_grad_norm, config.model_ema)
    optimizer = create_optimizer(net, config.optimizer, lr_schedule, config.momentum, config.weight_decay,
                                 optimizer_loss_scale_for(config.loss_scale_type, config.loss_scale, recipe_step),
                                 config.decay_norm_and_bias, betas=config.adam_betas, eps=config.adam_eps,
                                 no_decay_1d=config.no_decay_1d, no_decay_names=config.no_decay_names)
    loss_fn = create_loss(config.class_num, config.label_smooth_factor if config.use_label_smooth else 0.0,
                          soft_targets=soft_targets)
    ema = ModelEma(net, config.model_ema_decay, config.model_ema_warmup) if config.model_ema else None
    train_step = create_train_step(net, loss_fn, optimizer, config.amp_level,
                                   create_loss_scale_manager(config.loss_scale_type, config.loss_scale),
                                   config.accumulation_steps, config.clip_grad_norm, ema)
    ms.set_seed(config.seed + rank)
    ds.config.set_seed(config.seed)
    return net, lr_schedule, optimizer, train_step


def main(argv: Sequence[str]) -> int:
    from src.config import load_config

    config, _ = load_config(argv, description=__doc__)
    from src.kernels.backend import settle_conv_backend

    conv_backend = settle_conv_backend(config)  # before MindSpore is imported
    from src.data.recipe import AugmentSettings
    from src.engine.resume import check_checkpoint_options

    check_checkpoint_options(config)
    augment = AugmentSettings.from_config(config)  # a bad policy string or Mixup setting fails here

    from src.runtime.context import start_run
    from src.runtime.run_folder import RunFolder

    parallel = start_run(config, conv_backend).parallel
    output = Path(config.output_path).expanduser()
    checkpoint_dir = Path(config.checkpoint_path).expanduser() if config.checkpoint_path else output / "checkpoints"
    folder = RunFolder(output, checkpoint_dir, parallel.is_main)
    try:
        folder.open(resume=bool(config.resume), overwrite=config.overwrite,
                    checkpoint_prefix=f"{config.net_name}_{config.head}")
        return train(config, argv, conv_backend, parallel, folder, augment)
    except DropCovError as error:
        if folder.committed:  # the run had started: its log records why it stopped
            logger.error("%s", error)
        raise
    finally:
        folder.close()


def train(config: Config, argv: Sequence[str], conv_backend: str, parallel: Any, folder: Any, augment: Any) -> int:
    """Everything is checked (data, network, resume) before the run folder is written; then train.
    ``augment`` is the run's :class:`src.data.recipe.AugmentSettings` (checked before the run started)."""
    import mindspore as ms
    import numpy as np

    from src.data import pipeline_errors_as_dropcov, write_class_indices
    from src.engine.metrics import MetricsWriter
    from src.engine.resume import check_ranks_agree, resume_or_initialise
    from src.engine.train_settings import TrainSettings
    from src.engine.trainer import Trainer
    from src.runtime.checkpoint import CheckpointManager
    from src.runtime.log import stderr_line
    from src.runtime.signals import StopRequest, active_stop_request

    output = folder.output
    logger.info("resolved config (%s):\n%s", config.config_path or "defaults", config.to_yaml().rstrip())
    if parallel.distributed:
        logger.info("data parallel: rank %d of %d (launcher %s), gradients averaged over ranks", parallel.rank,
                    parallel.group_size, parallel.launcher)
    ms.set_seed(config.seed)  # the same seed on every rank; build_training reseeds per rank after the weights
    np.random.seed(config.seed)
    from src.data import CLASS_INDICES_FILE, read_class_indices

    run_classes = None
    if config.resume and (output / CLASS_INDICES_FILE).is_file():  # the labels the checkpoints were trained with
        run_classes = read_class_indices(str(output / CLASS_INDICES_FILE))
    train_data, val_data = build_datasets(config, parallel, run_classes, augment)
    steps_per_epoch = train_data.steps_per_epoch // config.accumulation_steps  # optimizer steps
    if steps_per_epoch < 1:
        raise DropCovError(f"accumulation_steps={config.accumulation_steps} exceeds the {train_data.steps_per_epoch} "
                           "batches of an epoch on this rank; lower accumulation_steps or batch_size")
    if config.train_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.train_steps_per_epoch)
    logger.info("data: %d training images in %d classes, %d per step on %d device(s), %d steps per epoch%s",
                train_data.total_images, len(train_data.class_names),
                config.batch_size * parallel.group_size * config.accumulation_steps, parallel.group_size,
                steps_per_epoch,
                f"; {val_data.total_images} validation images" if val_data is not None else "")

    net, lr_schedule, optimizer, train_step = build_training(config, steps_per_epoch, conv_backend, parallel.rank,
                                                             soft_targets=augment.mixing)
    state = resume_or_initialise(config, folder.checkpoint_dir, net, optimizer, train_step, lr_schedule,
                                 steps_per_epoch)
    check_ranks_agree(state, parallel)

    folder.commit()  # every check passed: the run starts and writes its folder
    metrics = MetricsWriter(output / "metrics.jsonl", enabled=parallel.is_main)
    if parallel.is_main:
        config.save(str(output / "config.yaml"))
        write_class_indices(str(output / "class_indices.json"), train_data.class_names)
        if state is not None:
            dropped = metrics.resume_at(state.global_step, state.resumed_from)
            if dropped:
                logger.info("metrics.jsonl: %d records of the steps after global step %d removed (they are "
                            "trained again now)", dropped, state.global_step)
    settings = TrainSettings.from_config(config, steps_per_epoch)
    checkpoints = None
    if parallel.is_main:  # only rank 0 writes checkpoints
        checkpoints = CheckpointManager(folder.checkpoint_dir, f"{config.net_name}_{config.head}",
                                        config.keep_checkpoint_max,
                                        best_metric=state.best_top1 if state is not None else None)
    hint = resume_command(argv) if not parallel.distributed else "the same launch command plus --resume auto"
    stop = active_stop_request() or StopRequest()
    with pipeline_errors_as_dropcov():
        trainer = Trainer(train_step, net, settings, lr_schedule, parallel, checkpoints=checkpoints,
                          metrics=metrics, plot_path=output / "metrics.png", stop=stop, resume_hint=hint,
                          checkpoint_extra={"config": config.to_yaml(), "steps_per_epoch": steps_per_epoch})
        result = trainer.fit(train_data, state, val_data)
    if result.stopped_by:
        if parallel.is_main:
            saved = f"checkpoint {result.last_checkpoint}" if result.last_checkpoint else "no checkpoint"
            stderr_line(f"train.py: stopped by {result.stopped_by} at global step {result.state.global_step}; {saved}; "
                  f"continue with --resume auto")
        return stop.exit_status
    best = f", best val top-1 {100 * result.state.best_top1:.2f}%" if result.state.best_top1 is not None else ""
    logger.info("training finished: %d/%d epochs, global step %d%s; output in %s", result.state.epoch,
                settings.epochs, result.state.global_step, best, output)
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, program="train.py"))
