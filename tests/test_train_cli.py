"""train.py as a user runs it (subprocesses on CPU): outputs, fine-tuning, NaN stop, SIGTERM, one-line errors."""
from __future__ import annotations

import json
import signal
import subprocess

import pytest
import yaml
from train_helpers import (
    CLASSES,
    REPO_ROOT,
    make_image_folder,
    run_train,
    start_train,
    subprocess_env,
    tiny_run_options,
    wait_for,
)

from src.runtime.checkpoint import load_checkpoint_file, read_extra


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def finished_run(image_folder, tmp_path_factory):
    """3 epochs x 2 steps with evaluation every epoch and keep_checkpoint_max 2."""
    output = tmp_path_factory.mktemp("run")
    result = run_train(tiny_run_options(image_folder, output, epoch_size=3, keep_checkpoint_max=2,
                                        run_eval=True, eval_start_epoch=1, eval_interval=1, log_interval=1))
    return output, result


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[-1]


@pytest.mark.slow
def test_end_to_end_outputs(finished_run):
    output, result = finished_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # the resolved config is printed at the start and saved
    assert "resolved config" in result.stdout and "net_name: resnet18" in result.stdout
    saved = yaml.safe_load((output / "config.yaml").read_text())
    assert saved["epoch_size"] == 3 and saved["class_num"] == len(CLASSES) and saved["data_path"]
    indices = json.loads((output / "class_indices.json").read_text())
    assert indices == {str(index): name for index, name in enumerate(CLASSES)}
    # checkpoints: keep-max 2 of the 3 periodic ones, plus best.ckpt
    names = sorted(path.name for path in (output / "checkpoints").iterdir())
    assert names == ["best.ckpt", "resnet18_dropcov-2_4.ckpt", "resnet18_dropcov-3_6.ckpt"], names
    params = load_checkpoint_file(output / "checkpoints" / "resnet18_dropcov-3_6.ckpt")
    assert read_extra(params, "epoch_num") == 3 and read_extra(params, "global_step") == 6
    assert yaml.safe_load(read_extra(params, "config"))["epoch_size"] == 3
    assert "moments.fc.weight" in params and "conv1.weight" in params
    # log lines and records
    log = (output / "train.log").read_text()
    assert "epoch 2/3 step 1/2 loss" in log and "img/s | ETA" in log
    assert "epoch 3/3 done: mean loss" in log and "val top-1" in log
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    kinds = [record["kind"] for record in records]
    assert kinds.count("step") == 6 and kinds.count("epoch") == 3 and kinds.count("eval") == 3
    assert all(record["count"] == 2 * len(CLASSES) for record in records if record["kind"] == "eval")
    assert (output / "metrics.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_pre_trained_into_another_class_count(finished_run, image_folder, tmp_path):
    output, _ = finished_run
    pre_trained = output / "checkpoints" / "best.ckpt"
    result = run_train(tiny_run_options(image_folder, tmp_path / "ft", epoch_size=1, train_steps_per_epoch=1,
                                        class_num=5, pre_trained=pre_trained, save_checkpoint=False))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "classifier of another class count not loaded (re-initialised): fc.weight, fc.bias" in result.stdout
    assert f"initialised from {pre_trained}" in result.stdout


@pytest.mark.slow
def test_nan_loss_stops_with_one_line_naming_the_step(image_folder, tmp_path):
    output = tmp_path / "nan"
    # epoch 1 trains normally and is checkpointed; from epoch 2 the rate is multiplied by 1e30
    result = run_train(tiny_run_options(image_folder, output, epoch_size=3, train_steps_per_epoch=3,
                                        lr_decay_mode="multistep", lr_milestones=1, lr_gamma=1e30,
                                        warmup_epochs=0, log_interval=10))
    assert result.returncode == 2
    line = one_line_error(result)
    assert line.startswith("train.py: error: training diverged: the loss is") and "at global step" in line
    assert "(epoch 2/3, step" in line or "(epoch 3/3, step" in line
    assert "resnet18_dropcov-1_3.ckpt is kept" in line
    assert sorted(p.name for p in (output / "checkpoints").glob("*.ckpt")) == ["resnet18_dropcov-1_3.ckpt"]
    from src.engine.resume import read_resume_state
    from src.runtime.checkpoint import load_checkpoint_file

    kept = load_checkpoint_file(output / "checkpoints" / "resnet18_dropcov-1_3.ckpt")  # still loads
    assert read_resume_state(kept, "kept")[0] == 1


@pytest.mark.slow
@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 0), (signal.SIGHUP, 129)])
def test_a_stop_signal_saves_a_checkpoint_and_exits_cleanly(image_folder, tmp_path, sig, status):
    """SIGTERM (a scheduler) and SIGHUP (a closed terminal or SSH session) save the exact step and stop."""
    name = signal.Signals(sig).name
    output = tmp_path / "term"
    log_path = tmp_path / "term.out"
    # 50 epochs of 6 steps, no periodic checkpoint before the end: the only one is the stop's
    process = start_train(tiny_run_options(image_folder, output, epoch_size=50, train_steps_per_epoch=6,
                                           save_checkpoint_epochs=100, log_interval=1), log_path)
    wait_for(lambda: "epoch 2/50 step 2/6" in log_path.read_text(), process, 180, "epoch 2 step 2")
    process.send_signal(sig)
    assert process.wait(timeout=120) == status
    log = log_path.read_text()
    assert f"received {name}" in log and f"stopped by {name} at epoch" in log
    assert "continue with: python train.py" in log and "--resume auto" in log
    saved = list((output / "checkpoints").glob("*.ckpt"))
    assert len(saved) == 1, log[-3000:]
    params = load_checkpoint_file(saved[0])
    step, epoch_num, step_num = (read_extra(params, key) for key in ("global_step", "epoch_num", "step_num"))
    assert 8 <= step < 300 and step == 6 * epoch_num + step_num  # the exact step, mid-epoch or at its end
    assert saved[0].name == f"resnet18_dropcov-{epoch_num}_{step}.ckpt"
    assert f"saved checkpoint {saved[0]}" in log or f"checkpoint {saved[0]}" in log


def test_run_distribute_without_launcher_is_one_line(image_folder, tmp_path):
    result = run_train(tiny_run_options(image_folder, tmp_path / "out", run_distribute=True), timeout=120)
    assert result.returncode == 2
    line = one_line_error(result)
    assert "not started by mpirun, srun or msrun" in line and "msrun --worker_num" in line


def test_unwritable_output_folder_is_one_line(image_folder, tmp_path):
    blocker = tmp_path / "plain_file"
    blocker.write_text("not a folder")
    result = run_train(tiny_run_options(image_folder, blocker / "out"), timeout=120)
    assert result.returncode == 2
    line = one_line_error(result)
    assert f"output_path '{blocker / 'out'}' cannot be written" in line


def test_a_data_path_without_val_is_not_scored_on_its_training_images(image_folder, tmp_path):
    """data_path pointing at train/ itself: both splits would be that folder; refused before anything is written."""
    output = tmp_path / "out"
    result = run_train(tiny_run_options(image_folder / "train", output, run_eval=True), timeout=120)
    assert result.returncode == 2
    line = one_line_error(result)
    assert line.startswith(f"train.py: error: data_path {image_folder / 'train'} has no val/ folder")
    assert "--eval_dataset_path" in line and "--run_eval False" in line
    assert not output.exists()


def test_help_lists_the_config_keys():
    result = run_train(["--help"], timeout=60)
    assert result.returncode == 0 and "--resume" in result.stdout and "--train_steps_per_epoch" in result.stdout


@pytest.mark.parametrize("script,args,message", [
    ("run_standalone_train_gpu.sh", [], "Train on one GPU"),
    ("run_standalone_train_gpu.sh", ["config/missing.yaml", "."], "config file not found: config/missing.yaml"),
    ("run_standalone_train_gpu.sh", ["config/digits_demo_cpu.yaml", "/no/such/data"], "DATA_PATH does not exist"),
    ("run_distribute_train_gpu.sh", ["two", "config/digits_demo_cpu.yaml", "."], "DEVICE_NUM must be a positive"),
    ("run_distribute_train_msrun.sh", ["0", "config/digits_demo_cpu.yaml", "."], "WORKER_NUM must be a positive"),
    ("run_distribute_train_msrun.sh", ["2", "config/digits_demo_cpu.yaml", "/no/such/data"],
     "DATA_PATH does not exist"),
])
def test_launch_scripts_check_their_arguments(script, args, message):
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / script), *args], cwd=REPO_ROOT,
                            env=subprocess_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and message in result.stderr, result.stderr


RECIPE_OPTIONS = dict(
    optimizer="AdamW", lr_max=0.002, lr_init=1e-5, lr_end=1e-5, weight_decay=0.05, no_decay_1d=True,
    lr_decay_mode="cosine", lr_schedule_unit="epoch", lr_warmup_prefix=False, warmup_epochs=1,
    auto_augment="rand-m9-mstd0.5-inc1", train_interpolation="bicubic", eval_interpolation="bicubic",
    random_erase_prob=0.25, mixup_alpha=0.8, cutmix_alpha=1.0, batch_size=2, accumulation_steps=2,
    clip_grad_norm=1.0, model_ema=True, model_ema_warmup=True, run_eval=True,
)


@pytest.mark.slow
def test_the_modern_recipe_trains_scores_its_ema_and_resumes(image_folder, tmp_path):
    """DeiT's recipe on the tiny folder: AdamW, per-epoch cosine, RandAugment, erasing, Mixup/CutMix, 2
    accumulated batches per step, clipping and a model EMA scored next to the raw weights; then --resume."""
    output = tmp_path / "recipe"
    result = run_train(tiny_run_options(image_folder, output, **RECIPE_OPTIONS))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (output / "train.log").read_text()
    assert "optimizer AdamW" in log and "4 per step on 1 device(s), 2 steps per epoch" in log
    assert "val (ema) top-1" in log
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert len(steps) == 4 and steps[0]["lr"] == steps[1]["lr"] != steps[2]["lr"]  # lr set once per epoch
    assert steps[0]["lr"] == pytest.approx(1e-5)  # epoch 0 of the warmup starts at lr_init
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(evals) == 2 and all("top1_ema" in r for r in evals)
    best = load_checkpoint_file(output / "checkpoints" / "best.ckpt")
    assert read_extra(best, "best_weights") in ("raw", "ema")
    assert "ema.fc.weight" in best and "moment1.fc.weight" in best and read_extra(best, "ema_num_updates") > 0

    resumed = run_train(tiny_run_options(image_folder, output, epoch_size=3, resume="auto", **RECIPE_OPTIONS))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "epoch_size: 2 -> 3" in resumed.stdout
    last = load_checkpoint_file(output / "checkpoints" / "resnet18_dropcov-3_6.ckpt")
    assert read_extra(last, "global_step") == 6 and read_extra(last, "ema_num_updates") == 6
