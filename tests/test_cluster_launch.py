"""The cluster launch scripts run for real with two CPU ranks: scripts/run_distribute_train_gpu.sh under OpenMPI's
mpirun (DEVICE_TARGET=CPU: MindSpore's CPU collectives, the scheduler started by rank 0), and
scripts/slurm_train_gpu.sbatch under tests/fake_slurm's srun and scontrol (tasks started locally with the variables
Slurm gives them, signals forwarded as srun forwards them).

What a GPU user meets is checked on the way: each rank on its own device, Ctrl-C that saves the stop step's checkpoint
(mpirun alone kills the ranks a second after a SIGINT), the ranks' user error as one line with status 2, and a rank
that dies named with its log. Without mpirun these tests skip, saying so; CI installs OpenMPI
(scripts/install_openmpi.sh) and sets DROPCOV_REQUIRE_MPIRUN=1, which turns the skip into a failure.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
from train_helpers import (
    REPO_ROOT,
    descendants,
    free_port,
    kill_tree,
    make_image_folder,
    subprocess_env,
    tiny_run_options,
    wait_for,
)

MPIRUN_SCRIPT = "run_distribute_train_gpu.sh"
SLURM_SCRIPT = "slurm_train_gpu.sbatch"
FAKE_SLURM = Path(__file__).parent / "fake_slurm"
CONFIG = str(REPO_ROOT / "config" / "digits_demo_cpu.yaml")

pytestmark = pytest.mark.slow


@pytest.fixture
def mpirun() -> str:
    """OpenMPI's mpirun: these tests skip without it, saying so, and fail where DROPCOV_REQUIRE_MPIRUN=1 (CI)."""
    found = shutil.which("mpirun")
    if found is None:
        reason = "OpenMPI's mpirun not found: `bash scripts/install_openmpi.sh` installs it"
        if os.environ.get("DROPCOV_REQUIRE_MPIRUN") == "1":
            pytest.fail(f"DROPCOV_REQUIRE_MPIRUN=1 but {reason}")
        pytest.skip(reason)
    return found


def records(output: Path, kind: str) -> list[dict]:
    path = output / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


def run_options(data: Path, output: Path, **overrides) -> list[str]:
    """tiny_run_options without the three options the scripts set themselves."""
    options = tiny_run_options(data, output, **overrides)
    for key in ("--config_path", "--data_path", "--output_path"):
        index = options.index(key)
        del options[index:index + 2]
    return options


def mpirun_command(data: Path, output: Path, *options: str, config: str = CONFIG) -> list[str]:
    return ["bash", str(REPO_ROOT / "scripts" / MPIRUN_SCRIPT), "2", config, str(data), str(output), "--", *options]


def cpu_env(**extra: str) -> dict:
    return subprocess_env(DEVICE_TARGET="CPU", MASTER_PORT=str(free_port()), **extra)


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def ranks_below(process: subprocess.Popen, marker: bytes) -> list[int]:
    """The train.py processes below ``process`` whose environment holds ``marker`` (e.g. its rank variable)."""
    found = []
    for pid in descendants(process.pid):
        try:
            if "train.py" in command_line(pid) and marker in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def start_lines(log_text: str) -> list[str]:
    return re.findall(r"^rank \d of 2 \(local rank \d on [^)]+\): device \S+, launcher \w+$", log_text, re.M)


def act_after_first_step(command: list[str], cwd: Path, env: dict, output: Path, tmp_path: Path,
                         act: Callable[[subprocess.Popen], None]) -> tuple[int, list[str]]:
    """Start a launch, wait for its first training step, ``act`` on it (a signal, a kill), wait for its end:
    ``(exit status, stderr lines)``; stdout goes to ``tmp_path/stdout``. A failure leaves nothing running."""
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
    try:
        wait_for(lambda: records(output, "step"), process, timeout=150, what="the first training step")
        act(process)
        status = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            kill_tree(process)
    return status, (tmp_path / "stderr").read_text().splitlines()


def saved_stop(output: Path, reason: str) -> tuple[dict, Path]:
    """The run's one stop record (the signal the ranks got) and the checkpoint of its step, which must exist."""
    (stop,) = records(output, "stop")
    checkpoint = output / "checkpoints" / f"resnet18_dropcov-{stop['epoch']}_{stop['global_step']}.ckpt"
    assert stop["reason"] == reason and checkpoint.is_file(), stop
    return stop, checkpoint


def kill_rank_1(marker: bytes) -> Callable[[subprocess.Popen], None]:
    def act(process: subprocess.Popen) -> None:
        (rank_1,) = ranks_below(process, marker)
        os.kill(rank_1, signal.SIGKILL)
    return act


def test_mpirun_ctrl_c_saves_the_stop_step_and_resume_auto_continues(mpirun, tmp_path):
    data = make_image_folder(tmp_path / "data")
    output = tmp_path / "out"
    options = run_options(data, output, epoch_size=4, save_checkpoint_epochs=2)  # 8 steps
    # Ctrl-C reaches the script alone: mpirun runs in a session of its own
    status, stderr_lines = act_after_first_step(mpirun_command(data, output, *options), tmp_path, cpu_env(), output,
                                                tmp_path, lambda process: process.send_signal(signal.SIGINT))
    assert status == 130, stderr_lines
    stop, checkpoint = saved_stop(output, "SIGUSR1")  # the ranks were asked by the SIGUSR1 that mpirun forwards
    assert stop["global_step"] < 8
    assert stderr_lines == [f"{MPIRUN_SCRIPT}: stopped by SIGINT at global step {stop['global_step']}; "
                            f"checkpoint {checkpoint}; continue with --resume auto"]
    console = (tmp_path / "stdout").read_text()
    assert f"{MPIRUN_SCRIPT}: received SIGINT: the ranks save a checkpoint" in console
    # every rank on its own device, each saying so in its own log
    logs = [(output / "mpirun_log" / "1" / f"rank.{rank}" / "stdout").read_text() for rank in (0, 1)]
    assert [start_lines(text) for text in logs] == [
        [f"rank {rank} of 2 (local rank {rank} on {os.uname().nodename}): device CPU:{rank}, launcher mpirun"]
        for rank in (0, 1)]

    resumed = subprocess.run(mpirun_command(data, output, *options, "--resume", "auto"), cwd=tmp_path, env=cpu_env(),
                             capture_output=True, text=True, timeout=150)
    assert resumed.returncode == 0, resumed.stderr
    (resume,) = records(output, "resume")
    assert resume["global_step"] == stop["global_step"] and resume["checkpoint"] == str(checkpoint)
    assert [record["global_step"] for record in records(output, "step")] == list(range(1, 9))
    assert (output / "checkpoints" / "resnet18_dropcov-4_8.ckpt").is_file()


def test_mpirun_a_user_error_in_the_ranks_is_one_line_and_status_2(mpirun, tmp_path):
    data = make_image_folder(tmp_path / "data")
    config = tmp_path / "typo.yaml"
    config.write_text(Path(CONFIG).read_text() + "epoch_sise: 3\n")
    result = subprocess.run(mpirun_command(data, tmp_path / "out", *run_options(data, tmp_path), config=str(config)),
                            cwd=tmp_path, env=cpu_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"{MPIRUN_SCRIPT}: error: {config}: unknown key 'epoch_sise'; "
                                          "did you mean 'epoch_size'?"]
    assert "-----" not in result.stdout and "Primary job" not in result.stdout  # no mpirun banner


def test_mpirun_a_rank_that_dies_is_named_with_its_log(mpirun, tmp_path):
    data = make_image_folder(tmp_path / "data")
    output = tmp_path / "out"
    options = run_options(data, output, epoch_size=50, train_steps_per_epoch=20, batch_size=1)
    status, stderr_lines = act_after_first_step(mpirun_command(data, output, *options), tmp_path, cpu_env(), output,
                                                tmp_path, kill_rank_1(b"OMPI_COMM_WORLD_RANK=1\0"))
    log = output / "mpirun_log" / "1" / "rank.1" / "stdout"
    assert status == 1
    assert stderr_lines == [
        f"{MPIRUN_SCRIPT}: error: rank 1 on node {os.uname().nodename} was killed by signal 9 (Killed); its log: "
        f"{log} (mpirun's: {output}/mpirun_log/mpirun.log); continue with the same command plus -- --resume auto"]
    time.sleep(1)
    leftovers = subprocess.run(["pgrep", "-f", f"train.py.*{output}|src.runtime.cluster"], capture_output=True,
                               text=True).stdout.split()
    assert leftovers == []  # rank 0 and the scheduler it started are gone too (they are no longer below the script)


def slurm_command(data: Path, output: Path, *options: str) -> list[str]:
    return ["bash", str(REPO_ROOT / "scripts" / SLURM_SCRIPT), CONFIG, str(data), str(output), *options]


def slurm_env(tmp_path: Path, ntasks: int = 2, **extra: str) -> dict:
    settings = dict(DEVICE_TARGET="CPU", SLURM_JOB_ID="4242", SLURM_NTASKS=str(ntasks), SLURM_JOB_NUM_NODES="1",
                    SLURM_CPUS_PER_TASK="2",
                    SLURM_JOB_NODELIST="localhost", SLURM_SUBMIT_DIR=str(REPO_ROOT), MASTER_PORT=str(free_port()),
                    FAKE_SRUN_RECORD=str(tmp_path / "srun.argv"))
    env = subprocess_env(**{**settings, **extra})
    env["PATH"] = f"{FAKE_SLURM}{os.pathsep}{env['PATH']}"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def test_slurm_batch_script_usr1_saves_and_stops_each_task_on_its_own_device(tmp_path):
    """The batch script as sbatch runs it (from a copy, elsewhere): srun starts one rank per task, the scheduler at
    the first node's address; Slurm's USR1 before the time limit saves the stop step and ends with status 0."""
    data = make_image_folder(tmp_path / "data")
    output = tmp_path / "out"
    spool = tmp_path / "spool"
    spool.mkdir()
    batch_copy = spool / "slurm_script"
    shutil.copy(REPO_ROOT / "scripts" / SLURM_SCRIPT, batch_copy)
    options = run_options(data, output, epoch_size=50, train_steps_per_epoch=20, batch_size=1)
    # --signal=B:USR1@600: to the batch shell, which passes it on to srun
    status, stderr_lines = act_after_first_step(["bash", str(batch_copy), CONFIG, str(data), str(output), *options],
                                                spool, slurm_env(tmp_path), output, tmp_path,
                                                lambda process: process.send_signal(signal.SIGUSR1))
    assert status == 0, stderr_lines
    stop, checkpoint = saved_stop(output, "SIGUSR1")
    assert stderr_lines == [f"{SLURM_SCRIPT}: stopped by SIGUSR1 at global step {stop['global_step']}; "
                            f"checkpoint {checkpoint}; continue with --resume auto"]
    logs = [(output / "srun_log" / f"rank_{rank}.log").read_text() for rank in (0, 1)]
    assert [start_lines(text) for text in logs] == [
        [f"rank {rank} of 2 (local rank {rank} on {os.uname().nodename}): device CPU:{rank}, launcher srun"]
        for rank in (0, 1)]
    srun_argv = (tmp_path / "srun.argv").read_text().splitlines()
    # the job's CPUs per task passed on (srun of Slurm >= 22.05 does not take them from the job), no PMI
    assert srun_argv[:7] == ["--kill-on-bad-exit=1", "--cpu-bind=none", "--mpi=none", "--cpus-per-task=2", "--output",
                             f"{output}/srun_log/rank_%t.log", "python"]
    assert srun_argv[srun_argv.index("--device_num") + 1] == "2"


def test_slurm_scancel_with_usr1_stops_every_rank_at_a_saved_step(tmp_path):
    """`scancel --signal=USR1 JOBID` signals every task of the job's steps directly (not the batch script): each rank
    saves and stops, and the script reports rank 0's line."""
    data = make_image_folder(tmp_path / "data")
    output = tmp_path / "out"
    options = run_options(data, output, epoch_size=50, train_steps_per_epoch=20, batch_size=1)

    def scancel_usr1(batch: subprocess.Popen) -> None:
        tasks = ranks_below(batch, b"SLURM_STEP_NUM_TASKS=2\0")
        assert len(tasks) == 2
        for pid in tasks:
            os.kill(pid, signal.SIGUSR1)

    status, stderr_lines = act_after_first_step(slurm_command(data, output, *options), tmp_path,
                                                slurm_env(tmp_path), output, tmp_path, scancel_usr1)
    assert status == 0, stderr_lines
    stop, checkpoint = saved_stop(output, "SIGUSR1")
    assert stderr_lines == [f"{SLURM_SCRIPT}: stopped by SIGUSR1 at global step {stop['global_step']}; "
                            f"checkpoint {checkpoint}; continue with --resume auto"]


def test_slurm_plain_scancel_is_reported_as_a_kill_that_saved_nothing(tmp_path):
    """A plain scancel (or the time limit) sends SIGTERM to the batch script, srun and every task at once; srun
    answers by SIGKILLing the tasks. The script says so and how to stop with a checkpoint instead."""
    data = make_image_folder(tmp_path / "data")
    output = tmp_path / "out"
    options = run_options(data, output, epoch_size=50, train_steps_per_epoch=20, batch_size=1)

    def scancel(batch: subprocess.Popen) -> None:
        tasks = ranks_below(batch, b"SLURM_STEP_NUM_TASKS=2\0")
        srun = [pid for pid in descendants(batch.pid) if "fake_slurm/srun" in command_line(pid)]
        assert len(tasks) == 2 and len(srun) == 1
        for pid in (batch.pid, *srun, *tasks):
            os.kill(pid, signal.SIGTERM)

    status, stderr_lines = act_after_first_step(slurm_command(data, output, *options), tmp_path,
                                                slurm_env(tmp_path), output, tmp_path, scancel)
    assert status == 143
    assert stderr_lines[-1].startswith(f"{SLURM_SCRIPT}: error: the job was ended by SIGTERM (a plain scancel, or the "
                                       "time limit) and srun SIGKILLed the ranks: nothing was saved")
    assert "scancel --signal=USR1 JOBID" in stderr_lines[-1]


def test_slurm_batch_script_a_rank_that_dies_is_named_with_its_log(tmp_path):
    data = make_image_folder(tmp_path / "data")
    output = tmp_path / "out"
    options = run_options(data, output, epoch_size=50, train_steps_per_epoch=20, batch_size=1)
    status, stderr_lines = act_after_first_step(slurm_command(data, output, *options), tmp_path,
                                                slurm_env(tmp_path), output, tmp_path,
                                                kill_rank_1(b"SLURM_PROCID=1\0"))
    assert status == 1
    assert stderr_lines == [
        f"{SLURM_SCRIPT}: error: rank 1 on node {os.uname().nodename}: Killed; its log: {output}/srun_log/rank_1.log "
        f"(srun's: {output}/srun_log/srun.log); continue with the same sbatch line plus --resume auto"]


def test_slurm_batch_script_outside_a_job_and_from_elsewhere_is_one_line(tmp_path):
    script = str(REPO_ROOT / "scripts" / SLURM_SCRIPT)
    env = slurm_env(tmp_path)
    del env["SLURM_JOB_ID"]
    outside = subprocess.run(["bash", script, CONFIG, str(tmp_path), str(tmp_path / "out")], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=30)
    assert outside.returncode == 2 and outside.stderr == (
        f"{SLURM_SCRIPT}: error: not inside a Slurm job: submit it with sbatch (or run it inside salloc)\n")
    env = slurm_env(tmp_path, SLURM_SUBMIT_DIR=str(tmp_path))
    elsewhere = subprocess.run(["bash", script, CONFIG, str(tmp_path), str(tmp_path / "out")], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=30)
    assert elsewhere.returncode == 2 and elsewhere.stderr == (
        f"{SLURM_SCRIPT}: error: {tmp_path} is not the repository: submit from its folder or set REPO_ROOT\n")


def test_the_collective_probe_times_a_correct_all_reduce_on_every_rank_s_own_device(mpirun, tmp_path):
    """gpu_smoke.sh's first-collective step, on CPU ranks: each rank on its device, the sum right, two times."""
    result = subprocess.run([mpirun, "--allow-run-as-root", "--bind-to", "none", "-n", "2", "-x", "MASTER_PORT",
                             "python", "-m", "src.tools.collective_probe", "--device_target", "CPU"], cwd=REPO_ROOT,
                            env=cpu_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(start_lines(result.stderr)) == [
        f"rank {rank} of 2 (local rank {rank} on {os.uname().nodename}): device CPU:{rank}, launcher mpirun"
        for rank in (0, 1)]
    assert re.search(r"^collective_probe: 2 ranks: first all-reduce of 4 MiB \d+\.\d\d s .*, second \d+\.\d ms; "
                     r"sums correct$", result.stdout, re.M), result.stdout
