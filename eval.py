"""Score a checkpoint on the validation split: top-1, top-5, mean cross entropy, images per second.

  python eval.py --data_path=IMAGENET --checkpoint_file_path=CKPT --device_target="GPU" \\
      --config_path=./config/resnet50_imagenet2012_config.yaml
  mpirun -n 4 python eval.py ... --run_distribute=True                       (GPU ranks)
  msrun --worker_num=2 --local_worker_num=2 --join=True eval.py ... --run_distribute=True --device_target=CPU

Reads a published checkpoint or one written by train.py (optimizer state is ignored; the network's
parameters must all match the config). Labels are the training classes: the class_indices.json beside the
checkpoint or in its run folder, else the class folders of IMAGENET/train, else (with a warning) those of
the validation folder itself. A checkpoint of a run with a model EMA holds two sets of weights:
--eval_weights raw or ema picks one; auto (the default) takes the one best.ckpt says scored best, else raw.
Scores every image of IMAGENET/val (or --eval_dataset_path) exactly once, in float32 (amp_level is a
training setting), with counts summed over ranks; prints the result and writes it as JSON to
OUTPUT_PATH/eval_results.json (or --output_file).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Sequence

from src.cli import run_entry_point
from src.errors import DropCovError

if TYPE_CHECKING:  # the config (and NumPy with it) is imported once run_entry_point has set up signals
    from src.config import Config

logger = logging.getLogger("eval")

RESULTS_FILE = "eval_results.json"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output_file", default="",
                        help=f"JSON file for the results (default OUTPUT_PATH/{RESULTS_FILE})")


def progress_logger(total_images: int, images_per_batch: int, interval: int, batches: int) -> Callable[[int], None]:
    """A progress callback for :func:`src.engine.evaluate.evaluate`: logs ``images done / total, images/s,
    time left`` every ``interval`` batches and after the last one."""
    from src.engine.metrics import format_duration

    started = time.perf_counter()
    interval = max(1, int(interval))

    def report(done: int) -> None:
        if done % interval and done != batches:
            return
        images = min(done * images_per_batch, total_images) if total_images else done * images_per_batch
        elapsed = time.perf_counter() - started
        rate = images / max(elapsed, 1e-9)
        left = (total_images - images) / rate if total_images and rate > 0 else float("nan")
        share = f"/{total_images} ({100.0 * images / total_images:.1f}%)" if total_images else ""
        logger.info("eval: %d%s images, %.1f images/s, %s left", images, share, rate, format_duration(left))

    return report


def results_record(config: Config, metrics: Dict[str, float], val_root: str, group_size: int,
                   weights: str = "raw") -> Dict[str, Any]:
    """What eval_results.json holds: the scores, the speed, and what produced them."""
    import mindspore as ms

    from src.config import MODEL, keys_in

    seconds = float(metrics["seconds"])
    return {
        "top1": metrics["top1"], "top5": metrics["top5"], "loss": metrics["loss"], "count": metrics["count"],
        # wall time of the scoring pass, graph compilation and data loading included
        "images_per_second": metrics["count"] / seconds if seconds > 0 else None, "seconds": seconds,
        "checkpoint": str(Path(config.checkpoint_file_path).expanduser().resolve()), "weights": weights,
        "config_path": str(Path(config.config_path).resolve()) if config.config_path else "",
        "dataset": str(Path(val_root).expanduser().resolve()),
        "net": {**{key: getattr(config, key) for key in keys_in(MODEL)},
                "widths_from_checkpoint": config.widths_from_checkpoint},
        "eval_image_size": config.eval_image_size, "batch_size": config.batch_size,
        "device_target": config.device_target, "ranks": group_size, "mindspore": ms.__version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_json(record: Dict[str, Any], path: Path) -> None:
    """Write ``record`` to ``path`` atomically (a temporary file renamed over it)."""
    from src.runtime.files import atomic_write_text

    try:
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    except OSError as error:
        raise DropCovError(f"cannot write {path}: {error.strerror or error}; choose another --output_file "
                           "or --output_path") from error


def main(argv: Sequence[str]) -> int:
    from src.config import load_config

    config, args = load_config(argv, description=__doc__, extra_arguments=add_options)
    if not config.checkpoint_file_path:
        raise DropCovError("no checkpoint to evaluate: pass --checkpoint_file_path PATH.ckpt (a published "
                           "checkpoint or one from OUTPUT_PATH/checkpoints of a training run)")
    from src.kernels.backend import settle_conv_backend

    conv_backend = settle_conv_backend(config)  # before MindSpore is imported

    from src.data import create_dataset, pipeline_errors_as_dropcov
    from src.data.labels import find_training_classes
    from src.engine.checkpoint_network import load_checkpoint_network
    from src.engine.evaluate import evaluate
    from src.runtime.context import start_run
    from src.runtime.files import check_writable_directory
    from src.runtime.signals import deferred_stop

    parallel = start_run(config, conv_backend).parallel
    output_file = Path(args.output_file or Path(config.output_path) / RESULTS_FILE).expanduser()
    if parallel.is_main:
        check_writable_directory(output_file.parent, "output_file" if args.output_file else "output_path")

    checkpoint = config.checkpoint_file_path
    config, net, weights = load_checkpoint_network(config, conv_backend)

    shards = {"num_shards": parallel.group_size, "shard_id": parallel.rank} if parallel.group_size > 1 else {}
    training_classes = find_training_classes(checkpoint, config.data_path)
    if training_classes is not None:
        logger.info("labels: the %d training classes of %s", len(training_classes.names), training_classes.source)
    bundle = create_dataset(config.dataset, config.data_path, "val", config.batch_size, config.eval_image_size,
                            num_parallel_workers=config.num_parallel_workers, seed=config.seed,
                            safe_decode=config.safe_decode, eval_dataset_path=config.eval_dataset_path,
                            eval_resize_library=config.eval_resize_library, crop_pct=config.eval_crop_pct,
                            eval_interpolation=config.eval_interpolation,
                            class_names=training_classes.names if training_classes is not None else None, **shards)
    class_count = len(bundle.class_names)
    if class_count > config.class_num:
        raise DropCovError(f"{bundle.source} has {class_count} classes but the network has class_num="
                           f"{config.class_num} outputs; evaluate with a checkpoint and config for this data")
    logger.info("evaluating %s on %d images of %s (%d per batch, %d rank(s))", config.net_name,
                bundle.total_images, bundle.source, config.batch_size, parallel.group_size)

    log_progress = progress_logger(bundle.total_images, config.batch_size * parallel.group_size,
                                   config.log_interval, bundle.steps_per_epoch)
    # a signal during graph compilation or a batch stops at the next batch boundary, not inside MindSpore
    with pipeline_errors_as_dropcov(), deferred_stop() as check_stop:
        def progress(done: int) -> None:
            log_progress(done)
            check_stop()

        metrics = evaluate(net, bundle, parallel, progress=progress)
    record = results_record(config, metrics, bundle.source, parallel.group_size, weights)
    if parallel.is_main:
        write_json(record, output_file)
        speed = record["images_per_second"] or 0.0
        label = " (EMA weights)" if weights == "ema" else ""
        print(f"{config.net_name} {config.head} {Path(checkpoint).name}{label}: top-1 {100 * metrics['top1']:.2f}%  "
              f"top-5 {100 * metrics['top5']:.2f}%  loss {metrics['loss']:.4f}  on {metrics['count']} images "
              f"({speed:.1f} images/s); results in {output_file}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, program="eval.py"))
