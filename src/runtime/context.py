"""The set-up every entry point shares, in order: environment, logging, device, launcher.

:func:`settle_environment` runs before MindSpore is imported (it decides the convolution kernels and with
them oneDNN's instruction-set cap, and quiets MindSpore's C++ log); :func:`start_run` then selects the
device and execution mode, joins the data-parallel group when launched by mpirun/msrun and configures console
logging (a training run's folder and log file are :mod:`src.runtime.run_folder`'s). The config is read by attribute (``device_target``,
``mode_name``, ``device_id``, ``run_distribute``, ``device_num``, ``all_reduce_fusion_config``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .distributed import ParallelInfo, init_data_parallel
from .launchers import launch_position, rank_device_id
from .log import setup_logging

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """Where this process runs: its rank in the job and its convolution kernels."""

    parallel: ParallelInfo
    conv_backend: str


def start_run(config: Any, conv_backend: str, distributed: bool = True) -> RunContext:
    """Device, communicator and console logging for one process.

    Args:
        config: the run's config (read by attribute, see the module docstring).
        conv_backend: from :func:`src.kernels.backend.settle_conv_backend`.
        distributed: whether this program may run data parallel (``run_distribute``); predict and export
            run on one device.
    """
    from .device import setup_device

    setup_logging(None)
    position = launch_position() if distributed and config.run_distribute else None
    # a launched rank takes its local rank's device, passed explicitly: MindSpore would give every rank of
    # an mpirun or srun job device 0
    device_id = config.device_id if position is None else rank_device_id(position, config.device_target)
    setup_device(config.device_target, config.mode_name, device_id)
    parallel = ParallelInfo()
    if distributed:
        parallel = init_data_parallel(config.run_distribute, config.device_target, config.device_num,
                                      config.all_reduce_fusion_config)
    setup_logging(None, parallel.rank)
    if config.device_num > 1 and not config.run_distribute:
        logger.warning("device_num=%d is ignored without run_distribute: this is a single-device run",
                       config.device_num)
    return RunContext(parallel=parallel, conv_backend=conv_backend)
