"""Runs that must not overwrite each other, signals, a full disk and oversized networks, through the real
commands (a continuation of tests/test_robustness.py, whose helpers it uses).

Covered: two runs into one output folder at once (a lock refuses the second); a fresh run into a folder
that holds an earlier run's checkpoints (refused, ``--overwrite`` starts over); a refused resume writes
nothing into the run's folder; a run that fails its checks leaves no folder behind, and one that fails
after starting records the error in its train.log; ``--resume auto`` after SIGKILL leaves every step once in
metrics.jsonl with a resume marker, and after a SIGTERM stop the resumed epoch's mean loss covers the whole
epoch; Ctrl-C (SIGINT to the process group) during training and during evaluation; a write that fails
(a file-size limit standing in for a full disk); a class count that cannot fit in memory; warnings for
milestones past the last epoch and for device_num without run_distribute; data-parallel ranks that would
resume from different steps, and SIGTERM reaching every rank of a data-parallel job.
"""
from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_robustness import assert_one_line_error, eval_args, run, train_args, user_env
from train_helpers import REPO_ROOT, descendants, free_port, make_image_folder, wait_for


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("runs_data"), train_per_class=3, val_per_class=1, size=40)


def start(program: str, *args, log: Path, **popen) -> subprocess.Popen:
    with open(log, "w") as stream:
        return subprocess.Popen([sys.executable, str(REPO_ROOT / program), *map(str, args)], cwd=REPO_ROOT,
                                env=user_env(), stdout=stream, stderr=subprocess.STDOUT, **popen)


def records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line.strip()]


def written_records(output: Path) -> list[dict]:
    """The records a running training has written so far (a line still being written is left out)."""
    path = output / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------- one run per folder
@pytest.mark.slow
def test_a_second_run_into_a_busy_folder_is_refused(data, tmp_path):
    output = tmp_path / "out"
    first = start("train.py", *train_args(data, output, epoch_size=200, train_steps_per_epoch=2),
                  log=tmp_path / "first.log")
    try:
        wait_for(lambda: "epoch 1/200 step 1/2" in (tmp_path / "first.log").read_text(), first, 180, "training")
        second = run("train.py", *train_args(data, output, resume="auto"))
        assert_one_line_error(second, "train.py", f"output_path {output} is in use by another training run",
                              f"pid {first.pid}", "choose another --output_path")
        assert first.poll() is None  # the first run carries on
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_a_fresh_run_over_an_earlier_run_is_refused_unless_overwrite(data, tmp_path):
    output = tmp_path / "out"
    assert run("train.py", *train_args(data, output, epoch_size=1)).returncode == 0
    before = sorted(p.name for p in (output / "checkpoints").iterdir())
    log_before = (output / "train.log").read_text()
    again = run("train.py", *train_args(data, output, epoch_size=1, lr_max=0.02))
    assert_one_line_error(again, "train.py", f"output_path {output} holds the checkpoints of an earlier run",
                          "--resume auto", "--overwrite")
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == before
    assert (output / "train.log").read_text() == log_before

    over = run("train.py", *train_args(data, output, epoch_size=1, lr_max=0.02, overwrite=True))
    assert over.returncode == 0, over.stderr[-2000:]
    assert [record["kind"] for record in records(output)].count("start") == 1
    assert "lr_max: 0.02" in (output / "config.yaml").read_text()


@pytest.mark.slow
def test_a_refused_resume_writes_nothing_into_the_run_folder(data, tmp_path):
    output = tmp_path / "out"
    assert run("train.py", *train_args(data, output, epoch_size=1, train_steps_per_epoch=0)).returncode == 0
    files = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}
    refused = run("train.py", *train_args(data, output, epoch_size=2, train_steps_per_epoch=0, batch_size=2,
                                          resume="auto"))
    assert_one_line_error(refused, "train.py", "steps per epoch", "resume with the settings it was trained with")
    assert {path: path.read_bytes() for path in output.rglob("*") if path.is_file()} == files


def test_a_run_that_fails_its_checks_leaves_no_folder(data, tmp_path):
    output = tmp_path / "new" / "out"
    result = run("train.py", *train_args(tmp_path / "no_data", output))
    assert_one_line_error(result, "train.py", "dataset folder")
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_an_error_after_the_start_is_recorded_in_train_log(data, tmp_path):
    output = tmp_path / "out"
    result = run("train.py", *train_args(data, output, lr_decay_mode="constant", lr_max=1e30, warmup_epochs=0))
    line = assert_one_line_error(result, "train.py", "training diverged")
    assert line[len("train.py: error: "):] in (output / "train.log").read_text()


# ------------------------------------------------------------------------------------- resume and metrics
@pytest.mark.slow
def test_sigkill_then_resume_leaves_every_step_once_with_a_resume_marker(data, tmp_path):
    output = tmp_path / "out"
    options = dict(epoch_size=2, train_steps_per_epoch=0, batch_size=1, log_interval=1)  # 9 steps per epoch
    process = start("train.py", *train_args(data, output, **options), log=tmp_path / "run.log")
    # the metrics file, not the log, decides: its step record may follow the step's log line
    wait_for(lambda: sum(record["kind"] == "step" for record in written_records(output)) >= 12, process, 240,
             "epoch 2 step 3 in metrics.jsonl")
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = run("train.py", *train_args(data, output, resume="auto", **options), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    all_records = records(output)
    steps = [record["global_step"] for record in all_records if record["kind"] == "step"]
    assert steps == list(range(1, 19))  # each step once, in order: the killed run's redone steps dropped
    (marker,) = [record for record in all_records if record["kind"] == "resume"]
    assert marker["global_step"] == 9 and marker["dropped"] >= 3 and marker["checkpoint"].endswith("-1_9.ckpt")
    assert [record["epoch"] for record in all_records if record["kind"] == "epoch"] == [1, 2]


@pytest.mark.slow
def test_a_stopped_epoch_resumes_with_its_whole_mean_loss(data, tmp_path):
    output = tmp_path / "out"
    options = dict(epoch_size=2, train_steps_per_epoch=0, batch_size=1, log_interval=1, save_checkpoint_epochs=5)
    process = start("train.py", *train_args(data, output, **options), log=tmp_path / "run.log")
    wait_for(lambda: "epoch 2/2 step 2/9" in (tmp_path / "run.log").read_text(), process, 240, "epoch 2 step 2")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
    resumed = run("train.py", *train_args(data, output, resume="auto", **options), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    all_records = records(output)
    step_losses = {record["global_step"]: record["loss"] for record in all_records if record["kind"] == "step"}
    assert sorted(step_losses) == list(range(1, 19))
    epoch_two = [record for record in all_records if record["kind"] == "epoch" and record["epoch"] == 2][-1]
    assert epoch_two["loss"] == pytest.approx(np.mean([step_losses[step] for step in range(10, 19)]), rel=1e-5)


# ------------------------------------------------------------------------------------------------ signals
@pytest.mark.slow
def test_ctrl_c_during_training_stops_with_status_130(data, tmp_path):
    output = tmp_path / "out"
    process = start("train.py", *train_args(data, output, epoch_size=200, train_steps_per_epoch=2),
                    log=tmp_path / "run.log", start_new_session=True)
    wait_for(lambda: "epoch 1/200 step 2/2" in (tmp_path / "run.log").read_text(), process, 180, "training")
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
    assert process.wait(timeout=120) == 130
    log = (tmp_path / "run.log").read_text()
    assert "received SIGINT" in log and "stopped by SIGINT" in log and "SIGTERM" not in log
    assert list((output / "checkpoints").glob("*.ckpt"))


@pytest.mark.slow
def test_ctrl_c_during_evaluation_is_one_line_and_writes_nothing(data, tmp_path):
    trained = tmp_path / "trained"
    assert run("train.py", *train_args(data, trained, epoch_size=1, train_steps_per_epoch=1)).returncode == 0
    checkpoint = next((trained / "checkpoints").glob("*.ckpt"))
    many = make_image_folder(tmp_path / "many", train_per_class=1, val_per_class=200, size=40)
    output = tmp_path / "eval_out"
    with open(tmp_path / "eval.out", "w") as out, open(tmp_path / "eval.err", "w") as err:
        process = subprocess.Popen([sys.executable, str(REPO_ROOT / "eval.py"),
                                    *eval_args(many, checkpoint, output_path=output, log_interval=1)],
                                   cwd=REPO_ROOT, env=user_env(), stdout=out, stderr=err, start_new_session=True)
    wait_for(lambda: "eval: " in (tmp_path / "eval.out").read_text(), process, 180, "evaluation progress")
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) == 130
    assert (tmp_path / "eval.err").read_text() == "eval.py: interrupted by SIGINT; nothing was saved\n"
    assert not output.exists()


# ---------------------------------------------------------------------------------------------- resources
def _file_size_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_last_checkpoint(data, tmp_path):
    """A 4 MB file-size limit makes the checkpoint write fail (EFBIG) as a full disk does (ENOSPC)."""
    output = tmp_path / "out"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *map(str, train_args(data, output))],
                            cwd=REPO_ROOT, env=user_env(), capture_output=True, text=True, timeout=240,
                            preexec_fn=_file_size_limit(4 << 20))
    line = assert_one_line_error(result, "train.py", "could not write checkpoint", "File too large",
                                 "the previous file (if any) is unchanged")
    assert "CRITICAL" not in result.stderr and line
    assert not [path for path in (output / "checkpoints").iterdir() if "partial" in path.name]


def test_a_class_count_too_large_for_memory_is_one_line_before_any_allocation(data, tmp_path):
    result = run("train.py", *train_args(data, tmp_path / "out", class_num=100_000_000), timeout=120)
    assert_one_line_error(result, "train.py", "parameters", "GiB", "class_num=100000000")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_warnings_for_late_milestones_and_device_num_without_run_distribute(data, tmp_path):
    result = run("train.py", *train_args(data, tmp_path / "out", lr_decay_mode="multistep",
                                         lr_milestones="[1, 5]", device_num=4))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lr_milestones [5] lie at or beyond epoch_size 2" in result.stdout
    assert "device_num=4 is ignored without run_distribute" in result.stdout


def test_a_folder_as_config_path_is_named(tmp_path):
    assert_one_line_error(run("train.py", "--config_path", tmp_path), "train.py",
                          f"config_path {tmp_path} is a folder")


# ---------------------------------------------------------------------------------------------- data parallel
def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def msrun(script_args: list, log_dir: Path, timeout: float, **env) -> subprocess.CompletedProcess:
    command = ["msrun", "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", "--join=True", f"--log_dir={log_dir}", "--cluster_time_out=120",
               *map(str, script_args)]
    return subprocess.run(command, cwd=REPO_ROOT, env=user_env(MS_NODE_TIMEOUT="60", **env), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_ranks_that_would_resume_from_different_steps_stop_with_one_line(data, tmp_path):
    """Rank 0 finds a checkpoint in its output folder, rank 1 (another folder) none: one clear line instead of
    two replicas that diverge."""
    base = tmp_path / "runs"
    options = train_args(data, base / "rank0", epoch_size=1, train_steps_per_epoch=1)  # 1 step, as with 2 ranks
    assert run("train.py", *options).returncode == 0
    worker = REPO_ROOT / "tests" / "per_rank_output_worker.py"
    result = msrun([worker, base, *train_args(data, "PER_RANK", epoch_size=2, train_steps_per_epoch=1,
                                              resume="auto", run_distribute=True, device_target="CPU")],
                   tmp_path / "logs", timeout=300)
    logs = "".join(path.read_text() for path in (tmp_path / "logs").glob("worker_*.log"))
    assert result.returncode != 0
    found = re.search(r"the ranks would continue from different global steps \(rank 0: (\d+), rank 1: (\d+)\)", logs)
    assert found and sorted(found.groups()) == ["0", "1"], logs[-3000:]


@pytest.mark.slow
def test_sigterm_to_every_rank_saves_a_checkpoint_within_a_few_steps(tmp_path):
    """mpirun forwards SIGTERM to every rank and kills them seconds later: the ranks agree on a stop every
    4 steps, not only at the log points (the epoch ends here), and rank 0 checkpoints the step they stopped at."""
    data = make_image_folder(tmp_path / "data", train_per_class=24, val_per_class=1, size=32)
    output, log_dir = tmp_path / "out", tmp_path / "logs"
    steps = 36  # 72 images, 2 ranks, batch 1
    command = ["msrun", "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", "--join=True", f"--log_dir={log_dir}", "--cluster_time_out=120",
               str(REPO_ROOT / "train.py"),
               *map(str, train_args(data, output, epoch_size=20, train_steps_per_epoch=0, batch_size=1,
                                    log_interval=1000, save_checkpoint_epochs=1000, run_distribute=True))]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=user_env(MS_NODE_TIMEOUT="60"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    worker_log = log_dir / "worker_0.log"
    try:
        wait_for(lambda: worker_log.exists() and f"epoch 1/20 step {steps}/{steps}" in worker_log.read_text(),
                 process, 300, "the end of epoch 1")
        workers = [pid for pid in descendants(process.pid) if "train.py" in command_line(pid)]
        assert len(workers) >= 2, workers
        time.sleep(1.0)  # into epoch 2
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    log = worker_log.read_text()
    assert "stopped by SIGTERM" in log, log[-3000:]
    checkpoints = list((output / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 1, log[-3000:]
    global_step = int(checkpoints[0].stem.rsplit("_", 1)[1])
    step_in_epoch = global_step - steps
    assert 0 < step_in_epoch < steps and step_in_epoch % 4 == 0, global_step  # a stop check, not the epoch end
