"""Which launcher started this process, where the process sits in the job, and which device it takes.

Each launcher tells its ranks where they sit through its own environment variables: OpenMPI's ``mpirun``
(``OMPI_COMM_WORLD_*``, or PMI/PMIx under another MPI or ``srun --mpi=pmix``), Slurm's ``srun``
(``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_STEP_NUM_TASKS``) and MindSpore's ``msrun`` (``RANK_ID``, its
``DEVICE_ID`` = the local rank, ``MS_WORKER_NUM``). A rank's device is its local rank among the GPUs its node
shows it, passed to MindSpore explicitly: MindSpore's own choice depends on the launcher (it copies OpenMPI's local
rank into its context when imported, reads nothing of Slurm's, and ``set_device``'s documentation promises device 0
for launchers other than msrun), and a rank that was given one GPU of its own must take device 0.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable, Mapping

from src.errors import DropCovError


@dataclass(frozen=True)
class LaunchPosition:
    """Where a launched process sits: global rank and size (None where only the communicator knows them),
    its index on its node, the node's name, and whether the job spans several nodes (None: not known)."""

    launcher: str
    rank: int | None
    local_rank: int
    size: int | None
    host: str
    several_nodes: bool | None = None


def _int(env: Mapping[str, str], *keys: str) -> int | None:
    for key in keys:
        value = env.get(key, "").strip()
        if value.isdigit():
            return int(value)
    return None


def _mpirun(env: Mapping[str, str]) -> LaunchPosition | None:
    # PMI/PMIx variables alone are an MPI launcher's only outside an srun step: Slurm sets them in srun's tasks
    # too where its MPI plugin is pmix or pmi2
    pmi = ("PMI_SIZE" in env or "PMIX_RANK" in env) and "SLURM_STEP_NUM_TASKS" not in env
    if "OMPI_COMM_WORLD_SIZE" not in env and not pmi:
        return None
    size = _int(env, "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
    local_size = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE")
    return LaunchPosition("mpirun", _int(env, "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"),
                          _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID") or 0,
                          size, _host(env), None if size is None or local_size is None else local_size < size)


def _msrun(env: Mapping[str, str]) -> LaunchPosition | None:
    if not (env.get("MS_ROLE") and "MS_WORKER_NUM" in env):
        return None
    return LaunchPosition("msrun", _int(env, "RANK_ID", "MS_NODE_ID"), _int(env, "DEVICE_ID") or 0,
                          _int(env, "MS_WORKER_NUM"), _host(env))


def _srun(env: Mapping[str, str]) -> LaunchPosition | None:
    # SLURM_STEP_NUM_TASKS is set in the tasks of an srun step, not in the batch script itself (which has
    # SLURM_PROCID=0 and SLURM_NTASKS too, and must not take itself for rank 0 of a job)
    if "SLURM_PROCID" not in env or "SLURM_STEP_NUM_TASKS" not in env:
        return None
    nodes = _int(env, "SLURM_STEP_NUM_NODES")
    return LaunchPosition("srun", _int(env, "SLURM_PROCID"), _int(env, "SLURM_LOCALID") or 0,
                          _int(env, "SLURM_STEP_NUM_TASKS"), _host(env), None if nodes is None else nodes > 1)


def _host(env: Mapping[str, str]) -> str:
    return env.get("SLURMD_NODENAME") or socket.gethostname()


#: The launchers in the order they are looked for: mpirun first, because a job that mpirun starts inside a
#: Slurm allocation carries Slurm's variables too, and msrun's workers may run under a Slurm step.
LAUNCHERS: dict[str, Callable[[Mapping[str, str]], LaunchPosition | None]] = {
    "mpirun": _mpirun, "msrun": _msrun, "srun": _srun}


def launch_position(environ: Mapping[str, str] | None = None) -> LaunchPosition | None:
    """This process's place in a launched job, or None when no launcher started it."""
    env = os.environ if environ is None else environ
    for position_of in LAUNCHERS.values():
        position = position_of(env)
        if position is not None:
            return position
    return None


def detect_launcher(environ: Mapping[str, str] | None = None) -> str | None:
    """'mpirun', 'msrun' or 'srun' for a launched process, None otherwise."""
    position = launch_position(environ)
    return position.launcher if position is not None else None


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (empty: none), or None when it is not set."""
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" not in env:
        return None
    return [entry.strip() for entry in env["CUDA_VISIBLE_DEVICES"].split(",") if entry.strip()]


def rank_device_id(position: LaunchPosition, device_target: str, environ: Mapping[str, str] | None = None) -> int:
    """The device id a launched rank passes to MindSpore: its local rank among the GPUs its node shows it.

    Where a launcher or scheduler gave the rank one GPU of its own (``CUDA_VISIBLE_DEVICES`` with one entry:
    Slurm's ``--gpus-per-task``/``--gpu-bind``, a wrapper script), that GPU is device 0. More ranks on a node
    than GPUs visible to them is a one-line error: two ranks on one GPU would run out of memory or crawl.
    """
    if device_target.upper() != "GPU":
        return position.local_rank
    gpus = visible_gpus(environ)
    if gpus is None:
        return position.local_rank
    if len(gpus) == 1:
        return 0
    if position.local_rank >= len(gpus):
        env = os.environ if environ is None else environ
        raise DropCovError(f"{position.launcher} started local rank {position.local_rank} on {position.host}, but "
                           f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r} shows this node's ranks "
                           f"{len(gpus)} GPU(s): start at most {len(gpus)} ranks per node")
    return position.local_rank
