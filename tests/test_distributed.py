"""Data parallel on CPU with msrun on 127.0.0.1: gradient averaging, identical ranks, a killed rank,
and train.py through scripts/run_distribute_train_msrun.sh."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from train_helpers import REPO_ROOT, free_port, make_image_folder, subprocess_env, tiny_run_options

WORKER = REPO_ROOT / "tests" / "distributed_step_worker.py"


def msrun(args, log_dir, timeout, **env):
    command = ["msrun", "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", "--join=True", f"--log_dir={log_dir}", *map(str, args)]
    return subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env(**env), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_two_ranks_are_identical_and_match_one_process_on_the_whole_batch(tmp_path):
    check_ranks_match_one_process(tmp_path)


@pytest.mark.slow
def test_ranks_accumulating_micro_batches_match_one_process_on_the_whole_batch(tmp_path):
    """The recipe step (2 micro-batches of 1 image per rank, one all-reduce per update, EMA on) trains the
    weights today's step trains on the 4 images at once."""
    check_ranks_match_one_process(tmp_path, "--accumulation_steps", "2")


def check_ranks_match_one_process(tmp_path, *rank_options):
    single = subprocess.run([sys.executable, str(WORKER), str(tmp_path)], cwd=REPO_ROOT, env=subprocess_env(),
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-2000:]
    result = msrun([WORKER, tmp_path, *rank_options], tmp_path / "logs", timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rank0, rank1 = np.load(tmp_path / "weights_rank0.npz"), np.load(tmp_path / "weights_rank1.npz")
    whole = np.load(tmp_path / "weights_single.npz")
    assert sorted(rank0.files) == sorted(whole.files) and len(rank0.files) > 40
    for name in rank0.files:  # all-reduced gradients: the ranks stay bit-identical despite other data
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
    worst = max(float(np.abs(rank0[name] - whole[name]).max()) for name in rank0.files)
    assert worst < 1e-5, worst  # mean of the ranks' gradients == gradient of the whole batch
    # the steps changed the weights (a run that skipped the update would pass the checks above)
    losses = [line for line in (tmp_path / "logs" / "worker_0.log").read_text().splitlines()
              if line.startswith("rank 0 step")]
    assert len(losses) == 3 and losses[0].split()[-1] != losses[-1].split()[-1]


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_in_bounded_time(tmp_path):
    started = time.monotonic()
    # MS_NODE_TIMEOUT: the scheduler declares a silent node dead after 8 s (default about 30 s)
    result = msrun([WORKER, tmp_path, "--steps", "1", "--kill_rank", "1", "--kill_after", "2"],
                   tmp_path / "logs", timeout=300, MS_NODE_TIMEOUT="8")
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "kills itself" in (tmp_path / "logs" / "worker_1.log").read_text()
    assert "was not stopped" not in (tmp_path / "logs" / "worker_0.log").read_text()
    assert elapsed < 200, elapsed


@pytest.mark.slow
def test_msrun_script_trains_two_ranks_rank0_writes_and_eval_counts_all_images(tmp_path):
    data = make_image_folder(tmp_path / "data")
    output = tmp_path / "out"
    options = tiny_run_options(data, output, epoch_size=1, train_steps_per_epoch=2, run_eval=True,
                               eval_interval=1, eval_start_epoch=1)
    command = ["bash", str(REPO_ROOT / "scripts" / "run_distribute_train_msrun.sh"), "2",
               str(REPO_ROOT / "config" / "digits_demo_cpu.yaml"), str(data), str(output), "--", *options]
    env = subprocess_env(MASTER_PORT=str(free_port()))
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    logs = "".join(path.read_text() for path in sorted((output / "msrun_log").glob("worker_*.log")))
    assert result.returncode == 0, result.stdout[-2000:] + logs[-4000:]
    train_log = (output / "train.log").read_text()
    assert "data parallel: rank 0 of 2" in train_log
    assert "6 per step on 2 device(s)" in train_log  # batch 3 per rank
    checkpoints = sorted(p.name for p in (output / "checkpoints").glob("*.ckpt"))
    assert checkpoints == ["best.ckpt", "resnet18_dropcov-1_2.ckpt"]
    import json

    evals = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    assert len(evals) == 1 and evals[0]["count"] == 6  # 2 val images x 3 classes, summed over both ranks


@pytest.mark.slow
def test_ranks_start_from_identical_weights_but_draw_their_own_dropcov_masks(tmp_path):
    result = msrun([REPO_ROOT / "tests" / "rank_seed_worker.py", tmp_path], tmp_path / "logs", timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rank0, rank1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    weights = [name for name in rank0.files if name.startswith("weight/")]
    assert len(weights) > 40
    for name in weights:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
    np.testing.assert_array_equal(rank0["logits"], rank1["logits"])  # same weights, same images, no dropout
    # the same images through the training step: only the DropCov masks can make the losses differ
    assert float(rank0["loss"]) != float(rank1["loss"])
