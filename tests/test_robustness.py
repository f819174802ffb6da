"""Bad input and faults, through the real commands: a non-zero exit, exactly one line on stderr that names
the culprit and the fix, no traceback (unless ``--debug``), and no work lost. docs/TROUBLESHOOTING.md
lists every message with its cause and fix.

The children run with the user's environment (no ``GLOG_v``), so MindSpore's own log lines would show up
on stderr and fail the one-line check. Config errors fail before MindSpore is imported (a fraction of a
second); data, device and output-folder errors before any graph is compiled (a few seconds).

Covered here: config file missing, YAML syntax error (file:line:col), duplicate YAML key, unknown key in
YAML and on the command line (with a suggestion), wrong type, value outside its choices (head, net_name),
batch size 0 / negative, ``--debug`` traceback; data_path empty / missing / a file, missing ``train/`` /
``val/``, no class folders, empty class folder, a symbolic link loop (train.py and verify_dataset), a val/
class that training does not know, non-image content; validation labelled by the training classes (a val/
lacking a class, a val/ class training does not know, only val/ and no class_indices.json); predict's ``--class_names_file`` against the outputs;
a real-world folder (CMYK, greyscale, PNG named .JPEG, upper-case extensions, OS and hidden files) trains;
corrupt JPEG in training (cut in the image data and cut in the headers, which crashes MindSpore's own decoder): the run
stops naming the file and leaves no ``abnormal_image*`` file; GPU or Ascend requested where MindSpore sees
none (all four commands); ``--run_distribute`` without a launcher (eval.py, predict.py); output folders
that cannot be written (checkpoint_path, eval output, predict output file, export file_name); through
train.py ``--pre_trained`` / ``--resume``: checkpoint missing, a folder, a text file, truncated, another
backbone, another cov_dim (fine-tuning does not mistake it for a class-count change), another class count
(resume; fine-tuning adapts it), a checkpoint without training state, and ``--resume auto`` over a folder
whose only checkpoint is truncated.

Covered elsewhere (not repeated here):
- tests/test_resume.py: SIGKILL mid-epoch, then ``--resume auto`` past a stale partial file, MindSpore's
  ``.tmp`` and a truncated newer ``.ckpt`` (skipped with a warning; the newest intact checkpoint is used)
  ends at the configured epoch with the same learning rate at every step. Decision: skip and warn, because
  a ``.ckpt`` under its final name is complete when we wrote it (atomic rename), so an older intact one is
  a safe resume point; when no intact one is left, ``--resume auto`` stops with an error (tested here)
  instead of silently starting from scratch.
- tests/test_train_cli.py: SIGTERM saves the exact step and exits 0; NaN loss stops naming the step and
  keeps the last good checkpoint; ``--run_distribute`` without a launcher and an unwritable output_path
  for train.py. tests/test_trainer.py: the same NaN and stop logic in-process.
- tests/test_distributed.py: in a 2-rank msrun CPU job, a rank killed by SIGKILL ends the job with a
  non-zero exit in bounded time (``MS_NODE_TIMEOUT`` bounds it).
- tests/test_eval.py: eval.py with a missing, non-checkpoint or truncated checkpoint and with a checkpoint
  of another backbone, class count or cov_dim. tests/test_data.py, tests/test_checkpoint.py,
  tests/test_config.py: the same checks in-process.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import CLASSES, REPO_ROOT, free_port, make_image_folder, subprocess_env, tiny_run_options

CONFIG = REPO_ROOT / "config" / "digits_demo_cpu.yaml"


# ---------------------------------------------------------------------------------------------- helpers
def user_env(**extra: str) -> dict:
    """The child's environment as a user has it: venv first on PATH, no GLOG_v (MindSpore's default
    logging), oneDNN left for the entry point to set."""
    env = subprocess_env()
    for key in ("GLOG_v", "ONEDNN_MAX_CPU_ISA"):
        env.pop(key, None)
    env.update(extra)
    return env


def run(program: str, *args, cwd: Path | None = None, timeout: float = 180, **env: str
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / program), *map(str, args)], cwd=cwd or REPO_ROOT,
                          env=user_env(**env), capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, program: str, *fragments: str) -> str:
    """Exit 2, stderr is exactly ``PROGRAM: error: ...`` on one line, holding every fragment."""
    lines = result.stderr.splitlines()
    context = f"stderr:\n{result.stderr[-3000:]}\nstdout:\n{result.stdout[-2000:]}"
    assert result.returncode == 2, context
    assert len(lines) == 1 and "Traceback" not in result.stderr, context
    line = lines[0]
    assert line.startswith(f"{program}: error: "), context
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in: {line}"
    return line


def train_args(data: Path, output: Path, **overrides) -> list:
    """tiny_run_options: ResNet-18 + DropCov at 32x32 on CPU, batch 3, 2 epochs of 2 steps."""
    return tiny_run_options(data, output, **overrides)


def eval_args(data: Path, checkpoint: Path, **overrides) -> list:
    options = {"config_path": CONFIG, "data_path": data, "checkpoint_file_path": checkpoint,
               "class_num": len(CLASSES), "eval_image_size": 32, "batch_size": 2, "num_parallel_workers": 1}
    options.update(overrides)
    return [item for key, value in options.items() for item in (f"--{key}", str(value))]


def copy_data(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """ImageNet layout, 3 classes of 40 px JPEGs: 3 training and 1 validation image per class."""
    return make_image_folder(tmp_path_factory.mktemp("robust_data"), train_per_class=3, val_per_class=1, size=40)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """A real training checkpoint: 1 epoch of 1 step (global step 1, steps_per_epoch 1)."""
    output = tmp_path_factory.mktemp("robust_run")
    result = run("train.py", *train_args(data, output, epoch_size=1, train_steps_per_epoch=1))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (checkpoint,) = (output / "checkpoints").glob("*.ckpt")
    return checkpoint


# ----------------------------------------------------------------------------------------------- config
def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = run("train.py", "--config_path", missing)
    assert_one_line_error(result, "train.py", f"config file not found: {missing}", "--config_path")


def test_debug_shows_the_traceback(tmp_path):
    result = run("train.py", "--config_path", tmp_path / "nope.yaml", "--debug")
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "DropCovError: config file not found" in result.stderr


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path / "bad.yaml", "net_name: resnet18\nhead: dropcov\n  cov_dim: 64\n")
    result = run("train.py", "--config_path", path)
    assert_one_line_error(result, "train.py", f"{path}:3:10: YAML syntax error: mapping values are not allowed")


def test_duplicate_yaml_key_is_an_error_not_a_silent_override(tmp_path):
    path = write(tmp_path / "twice.yaml", "net_name: resnet18\nlr_max: 0.1\nbatch_size: 4\nlr_max: 0.2\n")
    result = run("train.py", "--config_path", path)
    assert_one_line_error(result, "train.py", f"{path}:4:1:", "duplicate key 'lr_max'", "line 2")


@pytest.mark.parametrize("program", ["train.py", "eval.py", "predict.py", "export.py"])
def test_unknown_yaml_key_suggests_the_closest(tmp_path, program):
    path = write(tmp_path / "typo.yaml", "net_name: resnet18\nbatch_sise: 4\n")
    result = run(program, "--config_path", path)
    assert_one_line_error(result, program, f"{path}: unknown key 'batch_sise'; did you mean 'batch_size'?")


@pytest.mark.parametrize("yaml_text, cli, fragments", [
    (None, ["--batch_sise", "4"], ["command line: unknown option '--batch_sise'", "did you mean 'batch_size'?"]),
    ("batch_size: four\n", [], ["batch_size must be int, got 'four'"]),
    (None, ["--lr_max", "fast"], ["command line --lr_max: lr_max must be float, got 'fast'"]),
    (None, ["--run_distribute", "maybe"], ["run_distribute must be bool", "True/False"]),
    ("head: dropcovv\n", [], ["head='dropcovv' is not allowed; choose one of: dropcov, gap"]),
    (None, ["--net_name", "resnet19"], ["net_name='resnet19' is not allowed", "resnet18, resnet34, resnet50"]),
    (None, ["--device_target", "TPU"], ["device_target='TPU' is not allowed; choose one of: CPU, GPU, Ascend"]),
    (None, ["--batch_size", "0"], ["command line --batch_size: batch_size=0 is too small; it must be >= 1"]),
    ("batch_size: -3\n", [], ["batch_size=-3 is too small; it must be >= 1"]),
], ids=["unknown-cli", "type-yaml", "type-cli", "bool-cli", "choice-yaml", "net_name-cli", "device-cli",
        "batch0-cli", "batch-negative-yaml"])
def test_bad_config_values(tmp_path, yaml_text, cli, fragments):
    args = list(cli)
    if yaml_text is not None:
        path = write(tmp_path / "config.yaml", yaml_text)
        args = ["--config_path", path, *args]
        fragments = [f"{path}: ", *fragments]
    assert_one_line_error(run("train.py", *args), "train.py", *fragments)


def test_predict_refuses_run_distribute(tmp_path):
    result = run("predict.py", "--checkpoint_file_path", tmp_path / "x.ckpt", "--run_distribute", "True")
    assert_one_line_error(result, "predict.py", "runs on one device", "drop --run_distribute")


# ------------------------------------------------------------------------------------------------- data
def broken_data(data: Path, root: Path, case: str) -> tuple[str, str, dict]:
    """Build one broken dataset; returns (data_path, the path the message must name, extra options)."""
    if case == "data_path empty":
        return "", "", {}
    if case == "data_path missing":
        return str(root / "absent"), str(root / "absent"), {}
    if case == "data_path is a file":
        (root / "file").write_text("x")
        return str(root / "file"), str(root / "file"), {}
    copy = copy_data(data, root / "data")
    if case == "missing train":
        shutil.rmtree(copy / "train")
        return str(copy), str(copy / "train"), {}
    if case == "missing val":
        shutil.rmtree(copy / "val")
        return str(copy), str(copy / "val"), {"run_eval": True}
    if case == "no class folders":
        shutil.rmtree(copy / "train")
        (copy / "train").mkdir()
        return str(copy), str(copy / "train"), {}
    if case == "empty class folder":
        (copy / "train" / "zebra").mkdir()
        return str(copy), str(copy / "train" / "zebra"), {}
    if case == "link loop as a class":
        os.symlink("loop", copy / "train" / "loop")
        return str(copy), str(copy / "train" / "loop"), {}
    if case == "link loop as an image":
        os.symlink("self.jpg", copy / "train" / "cat" / "self.jpg")
        return str(copy), str(copy / "train" / "cat" / "self.jpg"), {}
    if case == "val class training does not know":
        shutil.copytree(copy / "val" / "fox", copy / "val" / "zebra")
        return str(copy), str(copy / "val" / "zebra"), {"run_eval": True}
    if case == "non-image content":
        (copy / "train" / "dog" / "page.jpg").write_text("<html>not an image</html>")
        return str(copy), str(copy / "train" / "dog" / "page.jpg"), {}
    raise AssertionError(case)


@pytest.mark.parametrize("case, fragments", [
    ("data_path empty", ["data_path is empty", "--data_path"]),
    ("data_path missing", ["does not exist", "--data_path"]),
    ("data_path is a file", ["is not a folder", "--data_path"]),
    ("missing train", ["missing train/ in", "one folder per class"]),
    ("missing val", ["missing val/ in", "one folder per class"]),
    ("no class folders", ["no class folders in", "one sub-folder per class"]),
    ("empty class folder", ["is empty", "add its images or remove the folder"]),
    ("link loop as a class", ["is a symbolic link loop", "remove the link"]),
    ("link loop as an image", ["is a symbolic link loop", "remove the link"]),
    ("val class training does not know", ["is not a training class", "knows 3 classes (cat, dog, fox)"]),
    ("non-image content", ["is not a JPEG, PNG or BMP image", "remove or replace it"]),
])
def test_bad_dataset_folder(data, tmp_path, case, fragments):
    data_path, named, extra = broken_data(data, tmp_path, case)
    result = run("train.py", *train_args(data_path, tmp_path / "out", **extra))
    assert_one_line_error(result, "train.py", named, *fragments)


@pytest.mark.slow
@pytest.mark.parametrize("keep", [0.6, 300], ids=["cut-in-image-data", "cut-in-headers"])
def test_corrupt_jpeg_in_training_stops_naming_the_file(data, tmp_path, keep):
    """A JPEG with a valid header whose body is cut passes the header check and fails while decoding,
    during the first epoch; a cut inside the headers is the file that kills MindSpore's own decoder."""
    copy = copy_data(data, tmp_path / "data")
    good = (copy / "train" / "dog" / "dog_0.jpg").read_bytes()
    bad = copy / "train" / "dog" / "dog_broken.jpg"
    bad.write_bytes(good[: int(len(good) * keep)] if keep < 1 else good[:keep])
    assert bad.read_bytes()[:3] == b"\xff\xd8\xff"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = run("train.py", *train_args(copy, tmp_path / "out", train_steps_per_epoch=0), cwd=workdir)
    assert_one_line_error(result, "train.py", f"bad image {bad}", "remove or replace it", "verify_dataset")
    assert list(workdir.iterdir()) == []
    assert not list(tmp_path.rglob("abnormal_image*")) and not list(REPO_ROOT.glob("abnormal_image*"))


@pytest.mark.slow
def test_corrupt_jpeg_in_evaluation_stops_naming_the_file(data, trained, tmp_path):
    copy = copy_data(data, tmp_path / "data")
    good = (copy / "val" / "fox" / "fox_0.jpg").read_bytes()
    bad = copy / "val" / "fox" / "fox_9_broken.jpg"  # the last file: three batches are scored before it
    bad.write_bytes(good[: int(len(good) * 0.6)])
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = run("eval.py", *eval_args(copy, trained, device_target="CPU", batch_size=1,
                                       output_path=tmp_path / "out"), cwd=workdir)
    assert_one_line_error(result, "eval.py", f"bad image {bad}", "remove or replace it")
    assert list(workdir.iterdir()) == [] and not (tmp_path / "out" / "eval_results.json").exists()


# ---------------------------------------------------------------------------- labels, real-world folders
def constant_checkpoint(trained: Path, path: Path, bias: list) -> Path:
    """``trained`` with the classifier's weight 0 and bias ``bias``: every image gets the logits ``bias``
    (one output per entry), so the right scores follow from the labels alone."""
    import mindspore as ms
    import numpy as np

    from src.models.weights import is_bookkeeping
    from src.runtime.checkpoint import load_checkpoint_file

    params = load_checkpoint_file(trained)
    weights = [{"name": name, "data": value} for name, value in params.items()
               if not isinstance(value, str) and not is_bookkeeping(name, value) and not name.startswith("fc.")]
    features = params["fc.weight"].shape[1]
    weights += [{"name": "fc.weight", "data": ms.Tensor(np.zeros((len(bias), features), np.float32))},
                {"name": "fc.bias", "data": ms.Tensor(np.array(bias, np.float32))}]
    path.parent.mkdir(parents=True, exist_ok=True)
    ms.save_checkpoint(weights, str(path))
    return path


def expected_scores(bias: list, labels: list) -> tuple[float, float]:
    """Top-1 and mean cross entropy when every image's logits are ``bias`` (NumPy, float64)."""
    import numpy as np

    logits = np.array(bias, np.float64)
    log_softmax = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    top1 = float(np.mean([int(np.argmax(logits)) == label for label in labels]))
    return top1, float(-np.mean(log_softmax[labels]))


@pytest.mark.slow
def test_eval_labels_val_by_the_training_classes(data, trained, tmp_path):
    """val/ without cat: dog and fox keep labels 1 and 2. Labelled by val/'s own folders they would be 0 and
    1, and a network that always answers cat (label 0) would score 50% instead of 0%. A val/ class that
    training does not know is then one line naming it."""
    copy = copy_data(data, tmp_path / "data")
    shutil.rmtree(copy / "val" / "cat")
    run_folder = tmp_path / "run"
    bias = [4.0, 0.0, 1.0]
    checkpoint = constant_checkpoint(trained, run_folder / "checkpoints" / "always_cat.ckpt", bias)
    shutil.copy(trained.parent.parent / "class_indices.json", run_folder / "class_indices.json")
    result = run("eval.py", *eval_args(copy, checkpoint, device_target="CPU", output_path=tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    top1, loss = expected_scores(bias, [1, 2])
    assert scores["count"] == 2 and scores["top1"] == top1 == 0.0
    assert scores["loss"] == pytest.approx(loss, rel=1e-5)
    assert result.stdout.count("training classes") == 2  # where the labels come from, and the class not scored
    assert f"labels: the 3 training classes of {run_folder / 'class_indices.json'}" in result.stdout
    assert f"{copy / 'val'} has no images of 1 of the 3 training classes (cat): they are not scored" in result.stdout
    shutil.copytree(copy / "val" / "dog", copy / "val" / "wolf")
    result = run("eval.py", *eval_args(copy, checkpoint, device_target="CPU", output_path=tmp_path / "out2"))
    assert_one_line_error(result, "eval.py", f"class folder {copy / 'val' / 'wolf'} is not a training class",
                          "knows 3 classes (cat, dog, fox)")
    assert not (tmp_path / "out2" / "eval_results.json").exists()


@pytest.mark.slow
def test_eval_with_only_val_and_no_class_indices_labels_by_its_folders_with_one_warning(data, trained, tmp_path):
    """The published ImageNet checkpoints' case: one output more than classes (1001 for 1000), the last never
    a target, only val/ to go by: labels are val/'s sorted folders, with one warning line."""
    copy = tmp_path / "imagenet"
    shutil.copytree(data / "val", copy / "val")
    bias = [0.0, 1.0, 4.0, 2.0]
    checkpoint = constant_checkpoint(trained, tmp_path / "published" / "net.ckpt", bias)
    result = run("eval.py", *eval_args(copy, checkpoint, device_target="CPU", class_num=4,
                                       output_path=tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    top1, loss = expected_scores(bias, [0, 1, 2])
    assert scores["count"] == 3 and scores["top1"] == pytest.approx(top1) and top1 == pytest.approx(1 / 3)
    assert scores["loss"] == pytest.approx(loss, rel=1e-5)
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and warnings[0].endswith(
        f"labels of {copy / 'val'} are its own sorted class folders: this assumes it holds every training class, "
        "in order (no class_indices.json of the checkpoint's run, no train/ folder to read the training classes "
        "from)"), warnings


def test_predict_class_names_file_with_too_few_names_names_both_counts(data, tmp_path):
    """With the run's classes known (DATA/train) the names must cover them; without, the network's outputs."""
    names = write(tmp_path / "names.txt", "cat\ndog\n")
    result = run("predict.py", data / "val", *eval_args(data, tmp_path / "unused.ckpt", device_target="CPU",
                                                        class_num=4), "--class_names_file", names)
    assert_one_line_error(result, "predict.py", f"--class_names_file {names} has 2 names but the checkpoint was "
                          f"trained on 3 classes ({data / 'train'}): give a name for each of them")
    no_train = tmp_path / "no_train"
    no_train.mkdir()
    result = run("predict.py", data / "val", *eval_args(no_train, tmp_path / "unused.ckpt", device_target="CPU",
                                                        class_num=4), "--class_names_file", names)
    assert_one_line_error(result, "predict.py", f"--class_names_file {names} has 2 names but the network has 4 "
                          "outputs (class_num 4)", "1000 names for the 1001-output ImageNet checkpoints")


@pytest.mark.slow
def test_predict_names_one_output_fewer_than_the_network_has(data, trained, tmp_path):
    """1001 outputs and 1000 names (the published ImageNet layout), here 4 and 3: the names print."""
    checkpoint = constant_checkpoint(trained, tmp_path / "net.ckpt", [0.0, 1.0, 4.0, 2.0])
    names = write(tmp_path / "names.txt", "cat\ndog\nfox\n")
    output = tmp_path / "predictions.json"
    result = run("predict.py", data / "val" / "dog", *eval_args(data, checkpoint, device_target="CPU", class_num=4),
                 "--class_names_file", names, "--top_k", 4, "--output_file", output)
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = json.loads(output.read_text())
    assert [(row["class_index"], row["class_name"]) for row in record["top_k"]] == \
        [(2, "fox"), (3, ""), (1, "dog"), (0, "cat")]


def stray_files(folder: Path) -> None:
    """What operating systems and notebooks leave in a class folder."""
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + bytes(100))
    (folder / "._first.jpg").write_bytes(b"\0\5\26\7\0\2\0\0Mac OS X" + bytes(100))  # AppleDouble fork
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100))
    (folder / "desktop.ini").write_text("[.ShellClassInfo]\nIconResource=x\n")


@pytest.mark.slow
def test_real_world_folder_trains(data, tmp_path):
    """CMYK and greyscale JPEGs, a PNG named .JPEG, upper-case extensions, OS files and a notebook's hidden
    folder: training and evaluation run; one warning line names the one real non-image file."""
    from PIL import Image

    copy = copy_data(data, tmp_path / "data")
    for split in ("train", "val"):
        for name in CLASSES:
            folder = copy / split / name
            first = sorted(folder.iterdir())[0]
            with Image.open(first) as image:
                rgb = image.convert("RGB")
            rgb.convert("CMYK").save(folder / f"{name}_cmyk.jpg", "JPEG")
            rgb.convert("L").save(folder / f"{name}_grey.JPG", "JPEG")
            rgb.save(folder / f"{name}_png.JPEG", "PNG")
            first.rename(folder / "first.JPEG")
            stray_files(folder)
        checkpoints = copy / split / ".ipynb_checkpoints"
        checkpoints.mkdir()
        shutil.copy(copy / split / "cat" / "first.JPEG", checkpoints / "first-checkpoint.JPEG")
    (copy / "train" / "dog" / "sources.txt").write_text("downloaded from ...")
    output = tmp_path / "out"
    result = run("train.py", *train_args(copy, output, epoch_size=1, train_steps_per_epoch=2, run_eval=True))
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert json.loads((output / "class_indices.json").read_text()) == {"0": "cat", "1": "dog", "2": "fox"}
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and f"skipped 1 file(s) of {copy / 'train'} without an image extension" in \
        warnings[0] and str(copy / "train" / "dog" / "sources.txt") in warnings[0], warnings
    assert "18 training images in 3 classes" in result.stdout and "12 validation images" in result.stdout
    assert "val top-1" in result.stdout


def test_symlink_loop_is_one_line_in_verify_dataset_too(data, tmp_path):
    copy = copy_data(data, tmp_path / "data")
    os.symlink("self.jpg", copy / "train" / "cat" / "self.jpg")
    result = subprocess.run([sys.executable, "-m", "src.tools.verify_dataset", str(copy), "--workers", "1"],
                            cwd=REPO_ROOT, env=user_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    bad = [line for line in result.stdout.splitlines() if line.startswith("BAD ")]
    assert bad == [f"BAD {copy / 'train' / 'cat' / 'self.jpg'}: symbolic link loop"]
    assert "12 images checked, 1 bad" in result.stdout


# ------------------------------------------------------------------------------------- device, launcher
def _has_device(target: str) -> bool:
    from src.runtime.device import device_available

    return device_available(target)


@pytest.mark.parametrize("program", ["train.py", "eval.py", "predict.py", "export.py"])
def test_gpu_requested_where_mindspore_sees_none(data, tmp_path, program):
    if _has_device("GPU"):
        pytest.skip("MindSpore sees a GPU here")
    checkpoint = tmp_path / "unused.ckpt"
    args = {"train.py": train_args(data, tmp_path / "out", device_target="GPU"),
            "eval.py": eval_args(data, checkpoint, device_target="GPU", output_path=tmp_path / "out"),
            "predict.py": [data / "val", *eval_args(data, checkpoint, device_target="GPU")],
            "export.py": eval_args(data, checkpoint, device_target="GPU", file_name=tmp_path / "m")}[program]
    result = run(program, *args)
    assert_one_line_error(result, program, "device_target GPU: MindSpore sees no usable GPU",
                          "--device_target CPU")


def test_ascend_requested_where_mindspore_sees_none(data, tmp_path):
    if _has_device("Ascend"):
        pytest.skip("MindSpore sees an Ascend device here")
    result = run("train.py", *train_args(data, tmp_path / "out", device_target="Ascend"))
    assert_one_line_error(result, "train.py", "device_target Ascend: MindSpore sees no usable Ascend device",
                          "--device_target CPU")


def test_eval_run_distribute_without_launcher_names_eval(data, tmp_path):
    result = run("eval.py", *eval_args(data, tmp_path / "x.ckpt", device_target="CPU", run_distribute=True,
                                       output_path=tmp_path / "out"))
    assert_one_line_error(result, "eval.py", "not started by mpirun, srun or msrun", "mpirun -n N python eval.py",
                          "--join=True eval.py")


# ------------------------------------------------------------------------------- unwritable output folders
@pytest.fixture
def blocker(tmp_path) -> Path:
    """A regular file used as a folder: nothing can be created under it (even by root)."""
    path = tmp_path / "plain_file"
    path.write_text("not a folder")
    return path


def test_unwritable_checkpoint_path(data, tmp_path, blocker):
    result = run("train.py", *train_args(data, tmp_path / "out", checkpoint_path=blocker / "ckpt"))
    assert_one_line_error(result, "train.py", f"checkpoint_path '{blocker / 'ckpt'}' cannot be written",
                          "--checkpoint_path")


def test_unwritable_eval_output(data, blocker):
    result = run("eval.py", *eval_args(data, blocker.with_name("unused.ckpt"), device_target="CPU", output_path=blocker / "out"))
    assert_one_line_error(result, "eval.py", f"output_path '{blocker / 'out'}' cannot be written")


def test_unwritable_predict_output_fails_before_predicting(data, blocker):
    result = run("predict.py", data / "val", *eval_args(data, blocker.with_name("unused.ckpt"), device_target="CPU"),
                 "--output_file", blocker / "predictions.csv")
    assert_one_line_error(result, "predict.py", f"output_file '{blocker}' cannot be written", "--output_file")
    assert "predicting" not in result.stdout


def test_unwritable_export_folder_fails_before_loading(data, blocker):
    result = run("export.py", *eval_args(data, blocker.with_name("unused.ckpt"), device_target="CPU", file_name=blocker / "model"))
    assert_one_line_error(result, "export.py", f"file_name '{blocker}' cannot be written", "--file_name")


# ------------------------------------------------------------------------------ checkpoints via train.py
def truncated_copy(checkpoint: Path, path: Path) -> Path:
    path.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    return path


def bad_checkpoint(trained: Path, root: Path, kind: str) -> Path:
    if kind == "missing":
        return root / "absent.ckpt"
    if kind == "folder":
        (root / "folder.ckpt").mkdir()
        return root / "folder.ckpt"
    if kind == "text":
        return write(root / "notes.ckpt", "net_name: resnet18\n")
    if kind == "truncated":
        return truncated_copy(trained, root / "cut.ckpt")
    if kind == "no training state":
        import mindspore as ms

        from src.models.weights import is_bookkeeping
        from src.runtime.checkpoint import load_checkpoint_file

        params = load_checkpoint_file(trained)
        weights = [{"name": name, "data": value} for name, value in params.items()
                   if not isinstance(value, str) and not is_bookkeeping(name, value)]
        ms.save_checkpoint(weights, str(root / "weights_only.ckpt"))
        return root / "weights_only.ckpt"
    return trained


@pytest.mark.slow
@pytest.mark.parametrize("option, kind, overrides, fragments", [
    ("pre_trained", "missing", {}, ["(--pre_trained) does not exist"]),
    ("pre_trained", "folder", {}, ["(--pre_trained) is a directory"]),
    ("pre_trained", "text", {}, ["(--pre_trained) is not a MindSpore checkpoint", "text file"]),
    ("resume", "truncated", {}, ["(--resume) is a truncated checkpoint", "re-copy"]),
    ("pre_trained", "good", {"net_name": "resnet34"}, ["does not fit the network", "use --net_name resnet18"]),
    ("pre_trained", "good", {"cov_dim": 64}, ["does not fit the network", "class_num 3 but the config builds",
                                              "use --cov_dim 128"]),
    ("resume", "good", {"class_num": 4}, ["does not fit the network", "use --class_num 3",
                                          "fine-tune it to your class count with --pre_trained"]),
    ("resume", "no training state", {}, ["not a training checkpoint", "--pre_trained"]),
], ids=["pre_trained-missing", "pre_trained-folder", "pre_trained-text", "resume-truncated",
        "pre_trained-backbone", "pre_trained-cov_dim", "resume-class_num", "resume-weights-only"])
def test_bad_checkpoint_through_train(data, trained, tmp_path, option, kind, overrides, fragments):
    checkpoint = bad_checkpoint(trained, tmp_path, kind)
    result = run("train.py", *train_args(data, tmp_path / "out", train_steps_per_epoch=1,
                                         **{option: checkpoint}, **overrides))
    line = assert_one_line_error(result, "train.py", str(checkpoint), *fragments)
    if kind == "good":  # a config mismatch names what the checkpoint is
        assert "it is resnet18 / head dropcov / cov_dim 128 / class_num 3" in line


@pytest.mark.slow
def test_resume_auto_with_no_intact_checkpoint_stops_instead_of_starting_over(data, trained, tmp_path):
    output = tmp_path / "out"
    checkpoints = output / "checkpoints"
    checkpoints.mkdir(parents=True)
    broken = truncated_copy(trained, checkpoints / trained.name)
    (checkpoints / f".{trained.stem}.4242424.partial.ckpt").write_bytes(trained.read_bytes()[:1000])
    result = run("train.py", *train_args(data, output, train_steps_per_epoch=1, resume="auto"))
    assert_one_line_error(result, "train.py", "--resume auto: none of the 1 checkpoint file(s)", str(checkpoints),
                          broken.name, "truncated", "--resume PATH")
    assert f"--resume auto skips {broken}" in result.stdout
    assert sorted(path.name for path in checkpoints.iterdir()) == sorted(
        [broken.name, f".{trained.stem}.4242424.partial.ckpt"])  # nothing written, nothing removed



# ------------------------------------------------------------------------------------ a rank dies (msrun)
def msrun_worker(msrun_pid: int, node_id: int) -> int | None:
    """PID of msrun's worker ``node_id`` (a child of ``msrun_pid`` with MS_ROLE=MS_WORKER), or None."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0") if parent == msrun_pid else []
        except (OSError, IndexError, ValueError):
            continue
        if b"MS_ROLE=MS_WORKER" in environ and f"MS_NODE_ID={node_id}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds msrun's workers through /proc")
def test_killed_rank_ends_the_train_job_with_one_line_and_intact_checkpoints(data, tmp_path):
    """train.py under msrun, 2 CPU ranks: SIGKILL rank 1 mid-run. msrun stops rank 0 at once; its scheduler
    process (also train.py) fails after MS_NODE_TIMEOUT with one line; every checkpoint left is intact."""
    from src.runtime.checkpoint import check_checkpoint_file

    output = tmp_path / "out"
    logs = tmp_path / "logs"
    command = ["msrun", "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", "--join=True", f"--log_dir={logs}", str(REPO_ROOT / "train.py"),
               *train_args(data, output, batch_size=1, epoch_size=1000, train_steps_per_epoch=3, lr_max=0.01,
                           warmup_epochs=0, keep_checkpoint_max=2),
               "--run_distribute", "True", "--device_num", "2"]
    env = user_env(MS_NODE_TIMEOUT="8")
    with open(tmp_path / "msrun.out", "w") as stream:
        job = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=stream, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        train_log = output / "train.log"
        while not (train_log.exists() and "epoch 3/1000" in train_log.read_text()):
            assert job.poll() is None, (tmp_path / "msrun.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "the 2-rank job did not reach epoch 3"
            time.sleep(0.2)
        victim = msrun_worker(job.pid, 1)
        assert victim is not None
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        returncode = job.wait(timeout=120)  # the bound: MS_NODE_TIMEOUT plus msrun's own shutdown
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert returncode != 0
    assert time.monotonic() - killed_at < 120
    scheduler = (logs / "scheduler.log").read_text(errors="replace")
    errors = [line for line in scheduler.splitlines() if line.startswith("train.py: error: ")]
    assert len(errors) == 1 and "Traceback" not in scheduler, scheduler[-3000:]
    assert "msrun scheduler: the job ended abnormally" in errors[0] and "--resume auto" in errors[0]
    assert "training finished" not in (logs / "worker_0.log").read_text(errors="replace")
    saved = sorted((output / "checkpoints").glob("*.ckpt"))
    assert saved, "rank 0 wrote no checkpoint before the kill"
    for path in saved:  # whatever was on disk when the job died is complete
        check_checkpoint_file(path)
