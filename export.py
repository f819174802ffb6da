"""Export the evaluation network of a checkpoint as MINDIR (or ONNX / AIR where MindSpore supports it).

  python export.py --checkpoint_file_path=CKPT --config_path=./config/resnet50_imagenet2012_config.yaml \\
      --device_target=CPU [--file_name=resnet50_dropcov] [--file_format=MINDIR] [--eval_image_size=224] \\
      [--batch_size=1]

The graph has a fixed input (BATCH, 3, EVAL_IMAGE_SIZE, EVAL_IMAGE_SIZE) float32, normalised like the
evaluation pipeline; the batch is 1 unless --batch_size is given on the command line (the config's
batch_size is a training setting). The file is FILE_NAME plus .mindir/.onnx/.air.
"""
from __future__ import annotations

import sys
from typing import Sequence

from src.cli import run_entry_point
from src.errors import DropCovError


def batch_size_given(argv: Sequence[str]) -> bool:
    """Whether ``--batch_size`` was passed on the command line (rather than taken from the YAML)."""
    return any(arg == "--batch_size" or arg.startswith("--batch_size=") for arg in argv)


def main(argv: Sequence[str]) -> int:
    from src.config import load_config

    config, _ = load_config(argv, description=__doc__)
    if not config.checkpoint_file_path:
        raise DropCovError("no checkpoint to export: pass --checkpoint_file_path PATH.ckpt")
    batch_size = config.batch_size if batch_size_given(argv) else 1
    from src.engine.export import export_network, export_path
    from src.runtime.environment import configure_cpu_environment
    from src.runtime.files import check_writable_directory

    destination = export_path(config.file_name, config.file_format)
    check_writable_directory(destination.parent, "file_name")  # before the checkpoint is read
    configure_cpu_environment(config.device_target)  # MindSpore's own ops export; ops.Custom ones do not

    from src.engine.checkpoint_network import load_checkpoint_network
    from src.runtime.context import start_run
    from src.runtime.signals import deferred_stop

    start_run(config, "stock", distributed=False)
    config, net, _ = load_checkpoint_network(config, conv_backend="stock")
    with deferred_stop() as check_stop:  # a signal stops before the file is put in place, not inside MindSpore
        written = export_network(net, destination, config.file_format, config.eval_image_size, batch_size,
                                 before_commit=check_stop)
    print(f"exported {config.net_name} {config.head} ({config.file_format}, input {batch_size}x3x"
          f"{config.eval_image_size}x{config.eval_image_size} float32) to {written}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, program="export.py"))
