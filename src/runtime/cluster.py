"""MindSpore's own cluster (its scheduler and workers, as msrun forms it) for launchers that do not form one.

``mpirun`` ranks on GPU join through MindSpore's OpenMPI bindings; but MindSpore's CPU collectives and a job
started by Slurm's ``srun`` need MindSpore's scheduler process, which only msrun starts. Here rank 0 starts
that scheduler itself (a child process that lives as long as rank 0 does) and every rank joins as a worker,
with the rank, size and address its launcher gave it: ``MASTER_ADDR`` (default 127.0.0.1; a name or an address
of rank 0's host that every rank reaches), ``MASTER_PORT`` (default 8118) and ``CLUSTER_TIME_OUT`` (seconds the
ranks wait for each other, default 600), as for msrun.

    python -m src.runtime.cluster        the scheduler's process (started by rank 0, not by hand)
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Mapping

from src.errors import DropCovError

from .launchers import LaunchPosition

logger = logging.getLogger(__name__)

DEFAULT_MASTER_ADDR = "127.0.0.1"
DEFAULT_MASTER_PORT = 8118
DEFAULT_TIME_OUT = 600
SCHEDULER_START_SECONDS = 120
#: Launcher variables the scheduler must not see: it is no rank of theirs (MindSpore would take OpenMPI's).
_LAUNCHER_PREFIXES = ("OMPI_", "PMIX_", "PMI_", "SLURM_")
_PR_SET_PDEATHSIG = 1
_PARENT_VARIABLE = "DROPCOV_SCHEDULER_PARENT"
_SCHEDULERS: list = []


def needs_own_scheduler(launcher: str, device_target: str) -> bool:
    """Whether ranks of ``launcher`` on ``device_target`` form MindSpore's cluster through :func:`join_cluster`:
    srun always, mpirun on CPU (mpirun on GPU goes through MindSpore's OpenMPI/NCCL path, msrun has its own)."""
    return launcher == "srun" or (launcher == "mpirun" and device_target.upper() == "CPU")


def cluster_address(environ: Mapping[str, str] | None = None) -> tuple[str, int]:
    """``(MASTER_ADDR, MASTER_PORT)`` of the scheduler, checked; a host name is resolved to its IPv4 address
    (MindSpore's cluster takes addresses only)."""
    env = os.environ if environ is None else environ
    address = env.get("MASTER_ADDR", "").strip() or DEFAULT_MASTER_ADDR
    port_text = env.get("MASTER_PORT", "").strip() or str(DEFAULT_MASTER_PORT)
    if not port_text.isdigit() or not 1024 <= int(port_text) <= 65535:
        raise DropCovError(f"MASTER_PORT must be a port number in 1024-65535, got {port_text!r}")
    try:
        return socket.gethostbyname(address), int(port_text)
    except OSError as err:
        raise DropCovError(f"MASTER_ADDR {address!r} does not resolve to an address here ({err.strerror or err}): "
                           "give rank 0's host by a name every node resolves, or by its address") from err


def cluster_time_out(environ: Mapping[str, str] | None = None) -> int:
    """``CLUSTER_TIME_OUT``: seconds the ranks wait for each other to join (MindSpore's ``MS_TOPO_TIMEOUT``)."""
    env = os.environ if environ is None else environ
    text = env.get("CLUSTER_TIME_OUT", "").strip() or str(DEFAULT_TIME_OUT)
    if not text.isdigit() or int(text) < 1:
        raise DropCovError(f"CLUSTER_TIME_OUT must be a positive number of seconds, got {text!r}")
    return int(text)


def join_cluster(position: LaunchPosition) -> None:
    """Set MindSpore's cluster variables for this rank (before ``mindspore.communication.init()``); rank 0
    first starts the scheduler."""
    if position.rank is None or position.size is None:
        raise DropCovError(f"{position.launcher} did not tell this process its rank and the job's size; "
                           "start it with mpirun (OpenMPI) or srun")
    address, port = cluster_address()
    if position.several_nodes and address.startswith("127."):
        raise DropCovError(f"MASTER_ADDR {os.environ.get('MASTER_ADDR') or DEFAULT_MASTER_ADDR!r} is {address} on "
                           f"{position.host}, a loopback address the job's other nodes cannot reach; set MASTER_ADDR "
                           "to the address of rank 0's host on the network the nodes share")
    common = {"MS_SCHED_HOST": address, "MS_SCHED_PORT": str(port), "MS_WORKER_NUM": str(position.size),
              "MS_TOPO_TIMEOUT": str(cluster_time_out())}
    if position.rank == 0:
        _check_port_free(address, port)
        _start_scheduler(common)
        _wait_until_listening(_SCHEDULERS[-1], address, port)
    os.environ.update(common, MS_ROLE="MS_WORKER", MS_NODE_ID=str(position.rank))


def _start_scheduler(common: dict) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(_LAUNCHER_PREFIXES)}
    env.update(common, MS_ROLE="MS_SCHED", **{_PARENT_VARIABLE: str(os.getpid())})
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    process = subprocess.Popen([sys.executable, "-m", "src.runtime.cluster"], env=env, cwd=root,
                               stdin=subprocess.DEVNULL)
    _SCHEDULERS.append(process)
    logger.debug("MindSpore scheduler started (pid %d) at %s:%s", process.pid, common["MS_SCHED_HOST"],
                 common["MS_SCHED_PORT"])


def _check_port_free(address: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, port))
        except OSError as err:
            raise DropCovError(f"MindSpore's scheduler cannot listen at MASTER_ADDR:MASTER_PORT {address}:{port} on "
                               f"rank 0's host {socket.gethostname()}: {err.strerror or err}; choose a free "
                               "MASTER_PORT (or the address of this host as MASTER_ADDR)") from err


def _wait_until_listening(process: subprocess.Popen, address: str, port: int) -> None:
    """Rank 0 goes on once its scheduler listens; a scheduler that died is a one-line error here, not a job whose
    ranks wait for it until CLUSTER_TIME_OUT."""
    deadline = time.monotonic() + SCHEDULER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DropCovError(f"MindSpore's scheduler exited with status {process.returncode} before it listened at "
                               f"{address}:{port}; its lines above say why")
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise DropCovError(f"MindSpore's scheduler did not listen at {address}:{port} within "
                       f"{SCHEDULER_START_SECONDS} s")


def _bind_to_parent() -> None:
    """The scheduler dies with rank 0 (a SIGKILLed rank 0 must not leave it behind) and ignores the stop
    signals meant for the ranks (a launcher may signal a whole process group; the workers still need the
    scheduler to finish their stop)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    parent = os.environ.get(_PARENT_VARIABLE, "")
    if parent.isdigit() and os.getppid() != int(parent):  # rank 0 died before the death signal was armed
        os._exit(1)


def run_scheduler() -> int:
    """The scheduler's process: MindSpore's ``init()`` as scheduler returns when every worker has finished."""
    _bind_to_parent()
    import mindspore as ms
    from mindspore.communication import init

    ms.set_device("CPU")  # the scheduler only coordinates (MindSpore forces its CPU backend for it)
    init()
    return 0


if __name__ == "__main__":
    sys.exit(run_scheduler())
