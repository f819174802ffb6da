"""The launch scripts (scripts/common.sh). mpirun's with stand-ins on PATH: a fake nvidia-smi that lists GPUs (and
MIG slices), a fake mpirun that records its argv; what each rank receives is read from that argv. msrun's for real,
two CPU workers: a signal's graceful stop and a worker's user error."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from train_helpers import REPO_ROOT, free_port, make_image_folder, subprocess_env, tiny_run_options, wait_for

NVIDIA_SMI_TWO_GPUS_WITH_MIG = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-11111111-2222-3333-4444-555555555555)
  MIG 3g.20gb     Device  0: (UUID: MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)
  MIG 3g.20gb     Device  1: (UUID: MIG-ffffffff-bbbb-cccc-dddd-eeeeeeeeeeee)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-66666666-2222-3333-4444-555555555555)
"""


@pytest.fixture
def stubs(tmp_path: Path) -> Path:
    """A bin folder with nvidia-smi (two GPUs, one split in MIG slices) and an mpirun that writes its argv,
    one argument per line, to ``mpirun.argv`` beside it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\ncat <<'EOF'\n{NVIDIA_SMI_TWO_GPUS_WITH_MIG}EOF\n")
    (bin_dir / "mpirun").write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {bin_dir / 'mpirun.argv'}\n")
    for tool in ("nvidia-smi", "mpirun"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir


def launch(script: str, args: list, stubs: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    base = {key: value for key, value in os.environ.items()
            if not key.startswith(("NCCL_", "CUDA_", "GLOG_")) and key not in ("LD_LIBRARY_PATH", "HOSTFILE")}
    base["PATH"] = f"{stubs}:{base['PATH']}"
    base.update(env)
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / script), *map(str, args)], cwd=REPO_ROOT,
                            env=base, capture_output=True, text=True, timeout=60)
    argv_file = stubs / "mpirun.argv"
    return result, argv_file.read_text().splitlines() if argv_file.exists() else []


def forwarded(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-x"]


TRAIN = ["config/digits_demo_cpu.yaml", "."]


def test_train_forwards_what_remote_ranks_need_and_does_not_bind(stubs, tmp_path):
    result, argv = launch("run_distribute_train_gpu.sh", [2, *TRAIN, tmp_path / "out"], stubs,
                          CUDA_HOME="/opt/cuda-11.8", LD_LIBRARY_PATH="/opt/cudnn/lib", GLOG_v="2",
                          NCCL_DEBUG="INFO", NCCL_SOCKET_IFNAME="eth0", CUDA_CACHE_PATH="/tmp/jit",
                          CUDA_CACHE_MAXSIZE="4294967296")
    assert result.returncode == 0, result.stderr
    assert argv[argv.index("--bind-to") + 1] == "none"
    assert argv[argv.index("-n") + 1] == "2"
    # not CUDA_CACHE_MAXSIZE: MindSpore sets it itself when its GPU plugin loads
    assert set(forwarded(argv)) == {"PATH", "LD_LIBRARY_PATH", "CUDA_HOME", "GLOG_v", "NCCL_DEBUG",
                                    "NCCL_SOCKET_IFNAME", "CUDA_CACHE_PATH"}
    assert "--hostfile" not in argv
    assert argv[argv.index("--device_target") + 1] == "GPU" and argv[argv.index("--device_num") + 1] == "2"


def test_unset_variables_are_not_forwarded(stubs, tmp_path):
    result, argv = launch("run_distribute_train_gpu.sh", [1, *TRAIN, tmp_path / "out"], stubs)
    assert result.returncode == 0, result.stderr
    assert forwarded(argv) == ["PATH"]


@pytest.mark.parametrize("device_num, visible, ok", [
    (2, None, True),   # nvidia-smi: 2 GPUs; its 2 MIG lines are not counted
    (3, None, False),
    (1, "0", True), (2, "0", False),
    (2, "GPU-11111111-2222-3333-4444-555555555555,1", True),
    (1, "", False),    # set but empty: no GPU at all
])
def test_gpu_count_follows_cuda_visible_devices_then_nvidia_smi_without_mig(stubs, tmp_path, device_num, visible,
                                                                           ok):
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    result, argv = launch("run_distribute_train_gpu.sh", [device_num, *TRAIN, tmp_path / "out"], stubs, **env)
    if ok:
        assert result.returncode == 0, result.stderr
        assert "CUDA_VISIBLE_DEVICES" not in forwarded(argv)  # the local ranks inherit it; other nodes have their own
    else:
        assert result.returncode == 2 and argv == []
        expected = "nvidia-smi -L" if visible is None else f"CUDA_VISIBLE_DEVICES='{visible}'"
        count = {None: 2, "0": 1, "": 0}[visible]
        assert result.stderr.strip() == (f"run_distribute_train_gpu.sh: error: DEVICE_NUM={device_num} but this machine shows {count} GPU(s) "
                                         f"({expected})")


def test_hostfile_spreads_ranks_over_nodes_without_the_local_gpu_check(stubs, tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("node1 slots=4\nnode2 slots=4\n")
    result, argv = launch("run_distribute_train_gpu.sh", [8, *TRAIN, tmp_path / "out"], stubs, HOSTFILE=str(hosts),
                          CUDA_HOME="/opt/cuda-11.8", CUDA_VISIBLE_DEVICES="4,5,6,7")
    assert result.returncode == 0, result.stderr
    assert argv[argv.index("--hostfile") + 1] == str(hosts) and argv[argv.index("-n") + 1] == "8"
    # the user's choice of GPUs holds on every node of a hostfile (outside Slurm, which sets it per node)
    assert {"CUDA_HOME", "CUDA_VISIBLE_DEVICES"} <= set(forwarded(argv))
    missing, _ = launch("run_distribute_train_gpu.sh", [8, *TRAIN, tmp_path / "out"], stubs,
                        HOSTFILE=str(tmp_path / "nope"))
    assert missing.returncode == 2 and "HOSTFILE not found" in missing.stderr


def test_inside_a_slurm_allocation_the_ranks_spread_over_its_nodes_with_their_own_gpus(stubs, tmp_path):
    """mpirun inside an allocation takes the allocation's nodes: no cap at this node's GPUs, and this node's
    CUDA_VISIBLE_DEVICES (Slurm's gres share of this node) is not sent to the others."""
    result, argv = launch("run_distribute_train_gpu.sh", [16, *TRAIN, tmp_path / "out"], stubs, SLURM_JOB_ID="77",
                          CUDA_VISIBLE_DEVICES="2,3", CUDA_HOME="/opt/cuda-11.8")
    assert result.returncode == 0, result.stderr
    assert argv[argv.index("-n") + 1] == "16" and "--hostfile" not in argv
    assert "CUDA_VISIBLE_DEVICES" not in forwarded(argv) and "CUDA_HOME" in forwarded(argv)


def test_mpirun_options_reach_mpirun_before_the_command(stubs, tmp_path):
    result, argv = launch("run_distribute_train_gpu.sh", [2, *TRAIN, tmp_path / "out"], stubs,
                          MPIRUN_OPTIONS="--prefix /opt/openmpi --mca btl_tcp_if_include eth1")
    assert result.returncode == 0, result.stderr
    command = argv.index("python")
    assert argv[argv.index("--prefix") + 1] == "/opt/openmpi" and argv.index("--prefix") < command
    assert argv[argv.index("--mca"):argv.index("--mca") + 3] == ["--mca", "btl_tcp_if_include", "eth1"]


def test_cpu_ranks_need_no_gpu_and_get_the_scheduler_address(stubs, tmp_path):
    result, argv = launch("run_distribute_train_gpu.sh", [4, *TRAIN, tmp_path / "out"], stubs, DEVICE_TARGET="CPU",
                          CUDA_VISIBLE_DEVICES="", MASTER_ADDR="10.0.0.1", MASTER_PORT="29500")
    assert result.returncode == 0, result.stderr
    assert argv[argv.index("--device_target") + 1] == "CPU"
    assert {"MASTER_ADDR", "MASTER_PORT"} <= set(forwarded(argv))
    wrong, _ = launch("run_distribute_train_gpu.sh", [1, *TRAIN, tmp_path / "out"], stubs, DEVICE_TARGET="TPU")
    assert wrong.returncode == 2 and wrong.stderr == ("run_distribute_train_gpu.sh: error: DEVICE_TARGET must be GPU "
                                                      "or CPU, got 'TPU'\n")


@pytest.mark.parametrize("script", ["run_distribute_train_gpu.sh", "run_distribute_train_msrun.sh", "run_eval_gpu.sh",
                                    "run_standalone_train_gpu.sh", "gpu_smoke.sh", "slurm_train_gpu.sbatch"])
def test_help_prints_the_usage_and_exits_0(script, tmp_path):
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / script), "--help"], cwd=tmp_path,
                            env={**os.environ, "REPO_ROOT": str(REPO_ROOT)}, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    header = [line for line in (REPO_ROOT / "scripts" / script).read_text().splitlines()[1:]
              if line.startswith("#") and not line.startswith("#SBATCH")]
    assert result.stdout.splitlines()[0] == header[0].lstrip("# ")
    assert f"scripts/{script}" in result.stdout
    assert not (tmp_path / "--help").exists()  # not taken for an output folder


def test_multi_gpu_eval_uses_the_same_launch(stubs, tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"unused")
    result, argv = launch("run_eval_gpu.sh", [*TRAIN, checkpoint, 2], stubs, CUDA_HOME="/opt/cuda-11.8",
                          NCCL_IB_DISABLE="1")
    assert result.returncode == 0, result.stderr
    assert argv[argv.index("--bind-to") + 1] == "none"
    assert {"CUDA_HOME", "NCCL_IB_DISABLE"} <= set(forwarded(argv))
    assert argv[argv.index("--device_target") + 1] == "GPU" and argv[argv.index("-n") + 1] == "2"


@pytest.mark.slow
def test_gpu_smoke_stops_at_once_with_one_line_where_mindspore_sees_no_gpu(tmp_path):
    from src.runtime.device import device_available

    if device_available("GPU"):
        pytest.skip("MindSpore sees a GPU here")
    env = subprocess_env()
    env.pop("CUDA_HOME", None)
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_smoke.sh"), str(tmp_path / "smoke")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gpu_smoke.sh: error: device_target GPU: MindSpore sees no usable GPU here: "
                               "CUDA_HOME is not set")
    assert sorted(p.name for p in (tmp_path / "smoke").rglob("*")) == ["logs"]  # no other step ran


MSRUN_SCRIPT = "run_distribute_train_msrun.sh"


def msrun_command(data: Path, output: Path, *options: str) -> list[str]:
    return ["bash", str(REPO_ROOT / "scripts" / MSRUN_SCRIPT), "2", str(REPO_ROOT / "config" / "digits_demo_cpu.yaml"),
            str(data), str(output), "--", *options]


def records(output: Path, kind: str) -> list[dict]:
    path = output / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


@pytest.mark.slow
def test_msrun_script_sigterm_saves_a_checkpoint_exits_0_and_resume_auto_continues(tmp_path):
    data = make_image_folder(tmp_path / "data")
    output = tmp_path / "out"
    options = tiny_run_options(data, output, epoch_size=4, save_checkpoint_epochs=2)  # 8 steps
    env = subprocess_env(MASTER_PORT=str(free_port()))
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        launcher = subprocess.Popen(msrun_command(data, output, *options), cwd=tmp_path, env=env, stdout=stdout,
                                    stderr=stderr)
    try:
        wait_for(lambda: records(output, "step"), launcher, timeout=150, what="the first training step")
        launcher.send_signal(signal.SIGTERM)  # to the script only: it must pass it on to msrun's workers
        status = launcher.wait(timeout=90)
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)  # the second signal stops everything at once
            launcher.wait(timeout=30)
    stderr_lines = (tmp_path / "stderr").read_text().splitlines()
    assert status == 0, stderr_lines
    (stop,) = records(output, "stop")
    assert stop["reason"] == "SIGTERM" and stop["global_step"] < 8
    checkpoint = output / "checkpoints" / f"resnet18_dropcov-{stop['epoch']}_{stop['global_step']}.ckpt"
    assert checkpoint.is_file()
    assert stderr_lines == [f"{MSRUN_SCRIPT}: stopped by SIGTERM at global step {stop['global_step']}; "
                            f"checkpoint {checkpoint}; continue with --resume auto"]
    assert "received SIGTERM: the workers save a checkpoint" in (tmp_path / "stdout").read_text()

    env["MASTER_PORT"] = str(free_port())
    resumed = subprocess.run(msrun_command(data, output, *options, "--resume", "auto"), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=150)
    assert resumed.returncode == 0, resumed.stderr
    (resume,) = records(output, "resume")
    assert resume["global_step"] == stop["global_step"] and resume["checkpoint"] == str(checkpoint)
    steps = [record["global_step"] for record in records(output, "step")]
    assert steps == list(range(1, 9))  # every step once: the resumed run went on from the stop to the end
    assert (output / "checkpoints" / "resnet18_dropcov-4_8.ckpt").is_file()


def test_msrun_script_refuses_a_busy_master_port_at_once(tmp_path):
    """msrun's scheduler fails at once on a port in use, but msrun would wait for its workers until the cluster
    time-out: the script checks the port first."""
    data = make_image_folder(tmp_path / "data")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(msrun_command(data, tmp_path / "out"), cwd=tmp_path,
                                env=subprocess_env(MASTER_PORT=str(port)), capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"{MSRUN_SCRIPT}: error: MASTER_PORT {port} is in use at 127.0.0.1 on this host: choose a "
                             f"free one, e.g. MASTER_PORT={port + 1}\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_msrun_script_gives_a_workers_user_error_as_one_line_and_status_2(tmp_path):
    data = make_image_folder(tmp_path / "data")
    config = tmp_path / "typo.yaml"
    config.write_text((REPO_ROOT / "config" / "digits_demo_cpu.yaml").read_text() + "epoch_sise: 3\n")
    command = msrun_command(data, tmp_path / "out", "--device_target", "CPU")
    command[3] = str(config)
    result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(MASTER_PORT=str(free_port())),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"{MSRUN_SCRIPT}: error: {config}: unknown key 'epoch_sise'; "
                                        "did you mean 'epoch_size'?"]
    assert "RuntimeError" in (tmp_path / "out" / "msrun_log" / "msrun.log").read_text()  # msrun's noise stays there
