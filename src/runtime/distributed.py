"""Data-parallel set-up: communicator init, rank and group size, and each rank's start line.

A single-process run never calls ``init()``. Which launcher started the process, and which device each rank
takes, is :mod:`src.runtime.launchers`'. ``mpirun`` (OpenMPI) on GPU joins through MindSpore's OpenMPI/NCCL
bindings and ``msrun`` through its own scheduler; ``mpirun`` on CPU and Slurm's ``srun`` form MindSpore's
cluster with a scheduler that rank 0 starts (:mod:`src.runtime.cluster`).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from src.errors import DropCovError

from .cluster import join_cluster, needs_own_scheduler
from .launchers import LaunchPosition, launch_position, visible_gpus
from .log import stderr_line

logger = logging.getLogger(__name__)

#: Entry points that run data parallel (named in the launch hint when they are the running script).
DISTRIBUTED_ENTRY_POINTS = ("train.py", "eval.py")


def launch_hint(program: str = "") -> str:
    """How to start ``program`` under a launcher (default: the running script when it is train.py or
    eval.py, else train.py)."""
    if not program:
        script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        program = script if script in DISTRIBUTED_ENTRY_POINTS else "train.py"
    return (f"start it with a launcher: `mpirun -n N python {program} ... --run_distribute=True` (GPU, NCCL) "
            f"or `msrun --worker_num=N --local_worker_num=N --master_addr=127.0.0.1 --master_port=8118 "
            f"--join=True {program} ... --run_distribute=True` (GPU or CPU), or srun inside a Slurm job "
            "(scripts/slurm_train_gpu.sbatch); or drop --run_distribute for a single-device run")


@dataclass(frozen=True)
class ParallelInfo:
    """Where this process sits in a (possibly single-process) data-parallel job."""

    rank: int = 0
    group_size: int = 1
    launcher: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.group_size > 1 or self.launcher is not None


def init_data_parallel(run_distribute: bool, device_target: str, device_num: int = 1,
                       all_reduce_fusion_config: Sequence[int] = ()) -> ParallelInfo:
    """Initialise communication for data parallel training when asked; otherwise a 1-process info.

    Gradients are averaged across ranks (``gradients_mean``); the group size comes from the
    communicator, and a disagreeing ``device_num`` gets a warning, not a silent override. Every rank
    prints one line with its rank, local rank, host and device (:func:`rank_start_line`).
    """
    if not run_distribute:
        return ParallelInfo()
    position = launch_position()
    if position is None:
        raise DropCovError(f"run_distribute=True but this process was not started by mpirun, srun or msrun: "
                           f"{launch_hint()}")
    launcher = position.launcher
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    if needs_own_scheduler(launcher, device_target):
        join_cluster(position)
    try:
        init()
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if launcher == "msrun" and os.environ.get("MS_ROLE") == "MS_SCHED":
            # msrun's scheduler process runs this script too; its init() lasts the whole job and fails when
            # a worker died or stopped answering (msrun has then already stopped the other workers).
            raise DropCovError(f"msrun scheduler: the job ended abnormally, a worker process died or stopped "
                               f"responding ({first}); see worker_*.log in msrun's --log_dir for the cause, then "
                               "continue with the same launch command plus --resume auto") from err
        raise DropCovError(f"distributed init failed under {launcher} on {device_target}: {first}") from err
    rank, size = get_rank(), get_group_size()
    if device_num != size:
        logger.warning("device_num=%d but the launcher started %d processes: using %d", device_num, size, size)
    kwargs = {"parallel_mode": ms.ParallelMode.DATA_PARALLEL, "gradients_mean": True, "device_num": size}
    ms.set_auto_parallel_context(**kwargs)
    if all_reduce_fusion_config:
        try:
            ms.set_auto_parallel_context(all_reduce_fusion_config=list(all_reduce_fusion_config))
        except (RuntimeError, ValueError, TypeError) as err:
            logger.warning("all_reduce_fusion_config %s not applied: %s", list(all_reduce_fusion_config), err)
    stderr_line(rank_start_line(rank, size, position, ms.get_current_device()))
    return ParallelInfo(rank=rank, group_size=size, launcher=launcher)


def rank_start_line(rank: int, size: int, position: LaunchPosition, device: Any,
                    environ: Mapping[str, str] | None = None) -> str:
    """The line each rank prints once it has joined, ``rank R of N (local rank L on HOST): device GPU:D, launcher
    mpirun``; ``device`` is MindSpore's ``get_current_device()``, the device the rank really took. Where
    ``CUDA_VISIBLE_DEVICES`` renumbers the GPUs, the entry behind GPU:D follows it (``GPU:0 = CUDA_VISIBLE_DEVICES
    entry '5'``), so ranks given one GPU each still name different GPUs."""
    target = getattr(device, "device_target", None)
    device_id = getattr(device, "device_id", None)
    if target is None:
        target, device_id = device
    gpus = visible_gpus(environ)
    physical = ""
    if target == "GPU" and gpus and isinstance(device_id, int) and 0 <= device_id < len(gpus):
        physical = f" = CUDA_VISIBLE_DEVICES entry {gpus[device_id]!r}"
    return (f"rank {rank} of {size} (local rank {position.local_rank} on {position.host}): device "
            f"{target}:{device_id}{physical}, launcher {position.launcher}")




_SUM_OVER_RANKS: list = []


def sum_over_ranks(values: np.ndarray) -> np.ndarray:
    """Element-wise sum of a small float vector over the ranks of the data-parallel group (all-reduce).

    Float32 on the wire (exact for counts below 2**24). Every rank must call it with the same shape,
    in the same order; only valid after :func:`init_data_parallel` set up a group.
    """
    from mindspore import Tensor, nn, ops

    if not _SUM_OVER_RANKS:
        class _AllReduceSum(nn.Cell):
            def __init__(self) -> None:
                super().__init__()
                self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM)

            def construct(self, x: Tensor) -> Tensor:
                return self.all_reduce(x)

        _SUM_OVER_RANKS.append(_AllReduceSum())
    reduced = _SUM_OVER_RANKS[0](Tensor(np.asarray(values, dtype=np.float32)))
    return reduced.asnumpy().astype(np.float64)
