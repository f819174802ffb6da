"""Resuming: SIGKILL in the middle of an epoch, then ``--resume auto``, ends where an uninterrupted run
does (same final epoch, global step and learning rate), skipping half-written checkpoint files; the
resume state (moments, global step) is restored exactly."""
from __future__ import annotations

import json
import shutil
import signal

import numpy as np
import pytest
from checkpoint_helpers import CONFIG_TEXT, TinyNet, assert_one_line, batch, make_training, net_values
from train_helpers import make_image_folder, run_train, start_train, tiny_run_options, wait_for

from src.engine import resume
from src.errors import DropCovError
from src.models.weights import load_network_weights
from src.runtime import checkpoint as ckpt
from src.runtime.checkpoint import load_checkpoint_file, read_extra

EPOCHS, STEPS = 3, 5


def step_records(output):
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {record["global_step"]: record for record in records if record["kind"] == "step"}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_auto_ends_like_an_uninterrupted_run(tmp_path):
    data = make_image_folder(tmp_path / "data")
    options = dict(epoch_size=EPOCHS, train_steps_per_epoch=STEPS, log_interval=1, lr_decay_mode="cosine",
                   warmup_epochs=1)

    reference = tmp_path / "reference"
    result = run_train(tiny_run_options(data, reference, **options))
    assert result.returncode == 0, result.stderr[-3000:]

    output = tmp_path / "killed"
    log_path = tmp_path / "killed.out"
    process = start_train(tiny_run_options(data, output, **options), log_path)
    wait_for(lambda: f"epoch 2/{EPOCHS} step 2/{STEPS}" in log_path.read_text(), process, 180, "epoch 2 step 2")
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    checkpoints = output / "checkpoints"
    good = sorted(checkpoints.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)[-1]
    assert good.name.startswith("resnet18_dropcov-")
    # what a kill during a save could leave: a partial file, MindSpore's .tmp, a truncated newer .ckpt
    (checkpoints / ".resnet18_dropcov-2_10.4242424.partial.ckpt").write_bytes(good.read_bytes()[:1000])
    (checkpoints / "resnet18_dropcov-2_10.ckpt.tmp").write_bytes(good.read_bytes()[:1000])
    truncated = checkpoints / "resnet18_dropcov-9_99.ckpt"
    shutil.copyfile(good, truncated)
    with open(truncated, "r+b") as stream:
        stream.truncate(truncated.stat().st_size // 2)

    resumed = run_train(tiny_run_options(data, output, resume="auto", **options))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    done = read_extra(load_checkpoint_file(good), "global_step")
    assert f"resumed from {good}: " in resumed.stdout and f"and {done} steps done" in resumed.stdout
    assert "--resume auto skips" in resumed.stdout and "truncated" in resumed.stdout

    final = load_checkpoint_file(output / "checkpoints" / f"resnet18_dropcov-{EPOCHS}_{EPOCHS * STEPS}.ckpt")
    expected = load_checkpoint_file(reference / "checkpoints" / f"resnet18_dropcov-{EPOCHS}_{EPOCHS * STEPS}.ckpt")
    assert read_extra(final, "epoch_num") == read_extra(expected, "epoch_num") == EPOCHS
    assert read_extra(final, "global_step") == read_extra(expected, "global_step") == EPOCHS * STEPS
    # the same learning rate at every global step, before the kill and after the resume
    reference_steps, resumed_steps = step_records(reference), step_records(output)
    assert set(resumed_steps) == set(reference_steps) == set(range(1, EPOCHS * STEPS + 1))
    for step, record in reference_steps.items():
        assert resumed_steps[step]["lr"] == pytest.approx(record["lr"], rel=1e-6), step


# ------------------------------------------------------------------------------------------- resume state
def test_resume_restores_moments_and_global_step_exactly(tmp_path):
    net, optimizer, train_step = make_training(seed=0)
    for step in range(3):
        train_step(*batch(step))
    path = ckpt.save_checkpoint_atomic(train_step, tmp_path / "r.ckpt",
                                       {"epoch_num": 1, "global_step": 3, "config": CONFIG_TEXT})

    resumed_net, resumed_optimizer, resumed_step = make_training(seed=1)
    saved = ckpt.load_checkpoint_file(path)
    epoch_num, global_step = resume.read_resume_state(saved)
    load_network_weights(resumed_net, saved)
    assert resume.restore_optimizer_state(resumed_optimizer, saved) == global_step == 3
    assert epoch_num == 1
    assert int(resumed_optimizer.global_step.asnumpy()[0]) == 3
    for original, restored in zip(optimizer.moments, resumed_optimizer.moments):
        np.testing.assert_array_equal(restored.asnumpy(), original.asnumpy())

    train_step(*batch(3))
    resumed_step(*batch(3))
    expected = net_values(net)
    for name, value in net_values(resumed_net).items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=1e-7)
    assert int(resumed_optimizer.global_step.asnumpy()[0]) == 4


def test_resume_errors_for_a_checkpoint_without_training_state(tmp_path):
    path = ckpt.save_checkpoint_atomic(TinyNet(), tmp_path / "weights.ckpt")
    saved = ckpt.load_checkpoint_file(path)
    with pytest.raises(DropCovError) as error:
        resume.read_resume_state(saved, source=str(path))
    assert_one_line(error, str(path), "epoch_num", "--pre_trained")
    _, optimizer, _ = make_training()
    with pytest.raises(DropCovError) as error:
        resume.restore_optimizer_state(optimizer, saved, source=str(path))
    assert_one_line(error, str(path), "missing (moments.conv1.weight")
