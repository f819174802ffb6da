"""Classify image files with a checkpoint: top-k classes and probabilities to CSV or JSON, and a short table.

  python predict.py photo1.jpg photo2.png some_folder/ --checkpoint_file_path=CKPT \\
      --config_path=./config/resnet50_imagenet2012_config.yaml --device_target=CPU --output_file=pred.csv

Images get the evaluation transform (resize, centre crop to eval_image_size, normalise). Class names
come from --class_names_file (one per output, or all but a last output that is never a target), else
class_indices.json beside the checkpoint or in its run folder (written by train.py), else the class
folders of DATA_PATH/train, else (with a warning) those of the validation split (DATA_PATH/val or
--eval_dataset_path); otherwise only indices are shown. The output format follows --output_file's extension (.csv or .json).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from src.cli import run_entry_point
from src.errors import DropCovError

logger = logging.getLogger("predict")


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", help="image files or folders (searched recursively)")
    parser.add_argument("--top_k", type=int, default=5, help="classes reported per image (default 5)")
    parser.add_argument("--output_file", default="",
                        help="predictions file, .csv or .json (default OUTPUT_PATH/predictions.csv)")
    parser.add_argument("--class_names_file", default="",
                        help="class names: class_indices.json ({name: index}), a JSON list, or one name per line")


def main(argv: Sequence[str]) -> int:
    from src.config import load_config

    config, args = load_config(argv, description=__doc__, extra_arguments=add_options)
    if not config.checkpoint_file_path:
        raise DropCovError("no checkpoint to predict with: pass --checkpoint_file_path PATH.ckpt")
    if args.top_k < 1:
        raise DropCovError(f"--top_k must be >= 1, got {args.top_k}")
    if config.run_distribute:
        raise DropCovError("predict.py runs on one device: drop --run_distribute")
    output_file = Path(args.output_file or Path(config.output_path) / "predictions.csv").expanduser()
    if output_file.suffix.lower() not in (".csv", ".json"):
        raise DropCovError(f"--output_file {output_file}: use a name ending in .csv or .json")
    if output_file.is_dir():
        raise DropCovError(f"--output_file {output_file} is a folder: give a file name ending in .csv or .json")

    from src.runtime.files import check_writable_directory

    # before any work: a folder that cannot be written fails now, not after every image was scored
    check_writable_directory(output_file.parent, "output_file" if args.output_file else "output_path")

    from src.engine.predict import collect_images, find_class_names

    files = collect_images(args.images)
    val_folder = config.eval_dataset_path or (str(Path(config.data_path) / "val") if config.data_path else "")
    class_names, names_source, names_warning = find_class_names(
        config.checkpoint_file_path, args.class_names_file, config.data_path, val_folder, config.class_num)
    from src.kernels.backend import settle_conv_backend

    conv_backend = settle_conv_backend(config)  # before MindSpore is imported

    from src.engine.checkpoint_network import load_checkpoint_network
    from src.engine.predict import eval_image_transform, format_table, predict_files, write_predictions
    from src.runtime.context import start_run
    from src.runtime.signals import deferred_stop

    start_run(config, conv_backend, distributed=False)
    if names_warning:
        logger.warning(names_warning)
    config, net, _ = load_checkpoint_network(config, conv_backend)
    logger.info("predicting %d image(s) with %s; class names: %s", len(files), config.checkpoint_file_path,
                names_source or "none (indices only)")
    transform = eval_image_transform(config.eval_image_size, config.eval_resize_library, config.eval_crop_pct,
                                     config.eval_interpolation)
    with deferred_stop() as check_stop:  # a signal stops at the next batch boundary, not inside MindSpore
        predictions = predict_files(net, files, config.eval_image_size, config.batch_size, args.top_k,
                                    transform=transform, progress=lambda done, total: check_stop())
    written = write_predictions(predictions, output_file, class_names)
    print(format_table(predictions, class_names), flush=True)
    print(f"{len(predictions)} image(s); top-{min(args.top_k, config.class_num)} predictions written to {written}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, program="predict.py"))
