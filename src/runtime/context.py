"""The set-up every entry point shares, in order: environment, logging, device, launcher, output folder.

:func:`settle_environment` runs before MindSpore is imported (it decides the convolution kernels and with
them oneDNN's instruction-set cap, and quiets MindSpore's C++ log); :func:`start_run` then selects the
device and execution mode, joins the data-parallel group when launched by mpirun/msrun, proves the output
folder writable (rank 0) and configures logging. The config is read by attribute (``device_target``,
``mode_name``, ``device_id``, ``run_distribute``, ``device_num``, ``all_reduce_fusion_config``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .distributed import ParallelInfo, detect_launcher, init_data_parallel
from .files import ensure_writable_directory
from .log import setup_logging

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """Where this process runs: its rank in the job, its output folder and its convolution kernels."""

    parallel: ParallelInfo
    output: Path | None
    conv_backend: str


def start_run(config: Any, conv_backend: str, output: Path | None = None, log_name: str = "train.log",
              distributed: bool = True) -> RunContext:
    """Device, communicator, output folder and logging for one process.

    Args:
        config: the run's config (read by attribute, see the module docstring).
        conv_backend: from :func:`src.kernels.backend.settle_conv_backend`.
        output: the run folder (created and proved writable on rank 0); None for a console-only run.
        log_name: the log file rank 0 writes inside ``output`` (``train.log``).
        distributed: whether this program may run data parallel (``run_distribute``); predict and export
            run on one device.
    """
    from .device import setup_device

    setup_logging(None)
    launched = distributed and config.run_distribute and detect_launcher() is not None
    setup_device(config.device_target, config.mode_name, None if launched else config.device_id)
    parallel = ParallelInfo()
    if distributed:
        parallel = init_data_parallel(config.run_distribute, config.device_target, config.device_num,
                                      config.all_reduce_fusion_config)
    if output is not None and parallel.is_main:
        ensure_writable_directory(output, "output_path")
    setup_logging(output, parallel.rank, log_name=log_name)
    return RunContext(parallel=parallel, output=output, conv_backend=conv_backend)
