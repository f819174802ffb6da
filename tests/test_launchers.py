"""Each launcher's environment: the rank's place in the job and the device id that reaches MindSpore's set_device.

The environments are the variables each launcher really sets: OpenMPI 4's mpirun (``OMPI_COMM_WORLD_*``), Slurm's
srun (``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_STEP_NUM_TASKS``, and the batch script's own variables without a
step), MindSpore's msrun (``MS_ROLE``, ``MS_WORKER_NUM``, ``RANK_ID``, ``DEVICE_ID`` = local rank:
``mindspore/parallel/cluster/process_entity/_api.py``).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from src.errors import DropCovError
from src.runtime import context
from src.runtime.cluster import cluster_address, cluster_time_out, join_cluster, needs_own_scheduler
from src.runtime.distributed import rank_start_line
from src.runtime.launchers import (
    LaunchPosition,
    detect_launcher,
    launch_position,
    rank_device_id,
)

OPENMPI_RANK_3 = {"OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_RANK": "11", "OMPI_COMM_WORLD_LOCAL_RANK": "3",
                  "OMPI_COMMAND": "python", "PMIX_RANK": "11"}
SLURM_TASK_5 = {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "8", "SLURM_NTASKS": "8",
                "SLURMD_NODENAME": "gpu-node-2", "SLURM_JOB_ID": "4242"}
SLURM_BATCH_SCRIPT = {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "4242"}
MSRUN_WORKER_2 = {"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "4", "RANK_ID": "2", "MS_NODE_ID": "2",
                  "DEVICE_ID": "2"}


@pytest.mark.parametrize("environ, launcher, rank, local_rank, size", [
    ({}, None, None, 0, None),
    (OPENMPI_RANK_3, "mpirun", 11, 3, 8),
    ({"PMI_SIZE": "2", "PMI_RANK": "1", "MPI_LOCALRANKID": "1"}, "mpirun", 1, 1, 2),  # MPICH's Hydra
    ({**SLURM_TASK_5, **OPENMPI_RANK_3}, "mpirun", 11, 3, 8),  # mpirun inside an allocation: OpenMPI's numbers
    (SLURM_TASK_5, "srun", 5, 1, 8),
    ({**SLURM_TASK_5, "PMIX_RANK": "5", "PMI_SIZE": "8"}, "srun", 5, 1, 8),  # Slurm's MpiDefault=pmix/pmi2
    (SLURM_BATCH_SCRIPT, None, None, 0, None),  # the batch script itself is no rank
    (MSRUN_WORKER_2, "msrun", 2, 2, 4),
    ({"RANK_ID": "0"}, None, None, 0, None),  # a stray RANK_ID alone is not a launcher
])
def test_each_launcher_tells_the_rank_its_place(environ, launcher, rank, local_rank, size):
    position = launch_position(environ)
    assert detect_launcher(environ) == launcher
    assert (position.local_rank if position else 0) == local_rank
    if launcher is None:
        assert position is None
    else:
        assert (position.launcher, position.rank, position.local_rank, position.size) == (launcher, rank,
                                                                                           local_rank, size)
    if launcher == "srun":
        assert position.host == "gpu-node-2"


@pytest.mark.parametrize("visible, local_rank, expected", [
    (None, 3, 3),            # all the node's GPUs: the local rank's
    ("0,1,2,3", 3, 3),
    ("4,5,6,7", 1, 1),       # a Slurm gres share: indices into what is visible
    ("GPU-aaaa", 3, 0),      # one GPU of its own (--gpus-per-task=1): device 0
    ("2", 0, 0),
])
def test_a_rank_takes_its_local_rank_among_the_visible_gpus(visible, local_rank, expected):
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    position = LaunchPosition("mpirun", 0, local_rank, 8, "node1")
    assert rank_device_id(position, "GPU", environ) == expected
    assert rank_device_id(position, "CPU", environ) == local_rank


def test_more_ranks_on_a_node_than_its_visible_gpus_is_one_line():
    position = LaunchPosition("srun", 6, 2, 8, "node3")
    with pytest.raises(DropCovError, match=r"^srun started local rank 2 on node3, but CUDA_VISIBLE_DEVICES='0,1' "
                                           r"shows this node's ranks 2 GPU\(s\): start at most 2 ranks per node$"):
        rank_device_id(position, "GPU", {"CUDA_VISIBLE_DEVICES": "0,1"})


@pytest.mark.parametrize("environ, expected_id", [
    (OPENMPI_RANK_3, 3), (SLURM_TASK_5, 1), (MSRUN_WORKER_2, 2), ({}, 7)])
def test_the_local_rank_reaches_set_device(monkeypatch, environ, expected_id):
    """start_run passes each launcher's local rank to setup_device explicitly (a single run: the config's id)."""
    for key in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MS_ROLE", "SLURM_PROCID", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    calls = []
    monkeypatch.setattr("src.runtime.device.setup_device", lambda *args: calls.append(args))
    monkeypatch.setattr(context, "init_data_parallel", lambda *args: context.ParallelInfo())
    config = SimpleNamespace(device_target="GPU", mode_name="GRAPH_MODE", device_id=7, run_distribute=bool(environ),
                             device_num=1, all_reduce_fusion_config=())
    context.start_run(config, "stock")
    assert calls == [("GPU", "GRAPH_MODE", expected_id)]


def test_the_start_line_names_rank_host_and_the_device_mindspore_took():
    position = LaunchPosition("mpirun", 1, 1, 2, "node7")
    assert rank_start_line(1, 2, position, ("GPU", 1), {}) == \
        "rank 1 of 2 (local rank 1 on node7): device GPU:1, launcher mpirun"
    # one GPU of its own: every rank is GPU:0, the visible entry tells them apart
    assert rank_start_line(1, 2, position, ("GPU", 0), {"CUDA_VISIBLE_DEVICES": "5"}) == \
        "rank 1 of 2 (local rank 1 on node7): device GPU:0 = CUDA_VISIBLE_DEVICES entry '5', launcher mpirun"
    assert rank_start_line(1, 2, position, ("CPU", 1), {"CUDA_VISIBLE_DEVICES": "5"}).endswith("device CPU:1, launcher mpirun")


@pytest.mark.parametrize("environ, several", [
    (OPENMPI_RANK_3, None), ({**OPENMPI_RANK_3, "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, True),
    ({**OPENMPI_RANK_3, "OMPI_COMM_WORLD_LOCAL_SIZE": "8"}, False),
    (SLURM_TASK_5, None), ({**SLURM_TASK_5, "SLURM_STEP_NUM_NODES": "2"}, True),
    ({**SLURM_TASK_5, "SLURM_STEP_NUM_NODES": "1"}, False)])
def test_whether_the_job_spans_several_nodes(environ, several):
    assert launch_position(environ).several_nodes is several


def test_a_loopback_scheduler_address_for_a_job_on_several_nodes_is_one_line(monkeypatch):
    """Debian maps a host's own name to 127.0.1.1: rank 0's scheduler would listen where no other node reaches."""
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    position = LaunchPosition("srun", 0, 0, 8, "node1", several_nodes=True)
    with pytest.raises(DropCovError, match=r"^MASTER_ADDR 'localhost' is 127\.0\.0\.1 on node1, a loopback address "
                                           r"the job's other nodes cannot reach; set MASTER_ADDR"):
        join_cluster(position)


@pytest.mark.parametrize("launcher, target, own", [
    ("mpirun", "GPU", False), ("mpirun", "CPU", True), ("srun", "GPU", True), ("srun", "CPU", True),
    ("msrun", "CPU", False)])
def test_which_launchers_form_mindsporess_cluster_themselves(launcher, target, own):
    assert needs_own_scheduler(launcher, target) is own


def test_the_scheduler_address_comes_from_master_addr_and_port():
    assert cluster_address({}) == ("127.0.0.1", 8118)
    # MindSpore's cluster takes addresses only: a name is resolved
    assert cluster_address({"MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}) == ("127.0.0.1", 29500)
    with pytest.raises(DropCovError, match=r"^MASTER_PORT must be a port number in 1024-65535, got '80'$"):
        cluster_address({"MASTER_PORT": "80"})
    with pytest.raises(DropCovError, match=r"^MASTER_ADDR 'no-such-host\.invalid' does not resolve to an address here"):
        cluster_address({"MASTER_ADDR": "no-such-host.invalid"})
    assert cluster_time_out({}) == 600 and cluster_time_out({"CLUSTER_TIME_OUT": "30"}) == 30
    with pytest.raises(DropCovError, match=r"^CLUSTER_TIME_OUT must be a positive number of seconds, got '0'$"):
        cluster_time_out({"CLUSTER_TIME_OUT": "0"})
