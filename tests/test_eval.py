"""eval.py end to end on CPU: published-layout checkpoints, known answers, one-line load errors.

The validation images are solid colours, so the evaluation transform (resize, centre crop, normalise)
maps each one to a constant tensor the test computes itself, independently of the data pipeline.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from src.models import create_model

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "config" / "resnet18_imagenet2012_config.yaml"
LAYOUT = REPO_ROOT / "tests" / "data" / "checkpoint_layout" / "resnet18_dropcov_1001.tsv"
IMAGE_SIZE = 32
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
# class folder -> number of validation images (labels are the sorted folder indices 0..3)
VAL_COUNTS = {"n01": 2, "n02": 3, "n03": 1, "n04": 4}
KNOWN_BIAS = {1: 5.0, 3: 4.0, 5: 3.0, 6: 2.0, 7: 1.0}  # logits of the crafted classifier; top-5 = 1,3,5,6,7


def make_imagenet(root: Path, seed: int = 0) -> list[tuple[tuple[int, int, int], int]]:
    """ImageNet layout with solid-colour PNGs of assorted sizes; returns the val (colour, label) pairs
    in file order."""
    rng = np.random.default_rng(seed)
    samples = []
    for label, (name, count) in enumerate(sorted(VAL_COUNTS.items())):
        for split, n in (("train", 1), ("val", count)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(n):
                colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                size = (int(rng.integers(36, 60)), int(rng.integers(36, 60)))
                Image.new("RGB", size, colour).save(folder / f"img_{index}.png")
                if split == "val":
                    samples.append((colour, label))
    return samples


def constant_input(colour: tuple[int, int, int]) -> np.ndarray:
    """What the eval transform makes of a solid-colour image: ``(colour - mean) / std`` everywhere."""
    value = (np.asarray(colour, np.float32) - MEAN) / STD
    return np.broadcast_to(value[:, None, None], (3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)


def save_training_style_checkpoint(net, path: Path) -> None:
    """The network's parameters plus the optimizer/bookkeeping entries of a training checkpoint."""
    entries = [{"name": p.name, "data": p.data} for p in net.get_parameters()]
    entries += [{"name": f"moments.{p.name}", "data": ms.Tensor(np.full(p.shape, 0.5, np.float32))}
                for p in net.trainable_params()]
    for name, value in (("global_step", 1234), ("epoch_num", 7), ("step_num", 3)):
        entries.append({"name": name, "data": ms.Tensor(np.array([value], np.int32))})
    for name, value in (("learning_rate", 0.12), ("momentum", 0.9)):
        entries.append({"name": name, "data": ms.Tensor(np.array(value, np.float32))})
    ms.save_checkpoint(entries, str(path))


def run_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, GLOG_v="3", PYTHONPATH=str(REPO_ROOT))
    env.pop("ONEDNN_MAX_CPU_ISA", None)  # eval.py sets it itself for CPU runs
    command = [sys.executable, str(REPO_ROOT / "eval.py"), f"--config_path={CONFIG}", "--device_target=CPU",
               f"--eval_image_size={IMAGE_SIZE}", "--num_parallel_workers=1", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def scores(logits: np.ndarray, labels: np.ndarray) -> dict:
    """top-1, top-5 and mean cross entropy computed with numpy."""
    z = logits.astype(np.float64)
    log_probs = z - z.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    order = np.argsort(-z, axis=1)
    return {"top1": float(np.mean(order[:, 0] == labels)),
            "top5": float(np.mean((order[:, :5] == labels[:, None]).any(axis=1))),
            "loss": float(-log_probs[np.arange(len(labels)), labels].mean()), "count": len(labels)}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    samples = make_imagenet(root / "imagenet")
    ms.set_seed(3)
    small = create_model("resnet18", num_classes=10)
    bias = np.zeros(10, np.float32)
    for index, value in KNOWN_BIAS.items():
        bias[index] = value
    small.head.fc.weight.set_data(ms.Tensor(np.zeros(small.head.fc.weight.shape, np.float32)))
    small.head.fc.bias.set_data(ms.Tensor(bias))
    save_training_style_checkpoint(small, root / "r18_c10.ckpt")
    other_dim = create_model("resnet18", num_classes=10, cov_dim=64)
    ms.save_checkpoint(other_dim, str(root / "r18_c10_cov64.ckpt"))
    return {"root": root, "samples": samples, "bias": bias}


@pytest.mark.slow
def test_published_layout_scores_like_a_direct_forward_pass(workspace, tmp_path):
    ms.set_seed(11)
    net = create_model("resnet18", num_classes=1001)
    rng = np.random.default_rng(5)
    # Spread the logits (fresh weights give nearly equal ones) so the top-5 boundary is far from ties.
    net.head.fc.weight.set_data(ms.Tensor(rng.normal(0, 0.5, net.head.fc.weight.shape).astype(np.float32)))
    net.head.fc.bias.set_data(ms.Tensor(rng.normal(0, 1.0, net.head.fc.bias.shape).astype(np.float32)))
    layout = [line.split("\t")[:2] for line in LAYOUT.read_text().splitlines()[1:]]
    params = {p.name: "x".join(str(d) for d in p.shape) for p in net.get_parameters()}
    assert [name for name, _ in layout] == list(params)
    assert all(params[name] == shape for name, shape in layout)
    checkpoint = tmp_path / "resnet18_dropcov_published.ckpt"
    save_training_style_checkpoint(net, checkpoint)

    samples = workspace["samples"]
    images = np.stack([constant_input(colour) for colour, _ in samples])
    labels = np.array([label for _, label in samples])
    net.set_train(False)
    logits = net(ms.Tensor(images)).asnumpy()
    ranked = np.sort(logits, axis=1)[:, ::-1]
    assert (ranked[:, 4] - ranked[:, 5]).min() > 1e-3 and (ranked[:, 0] - ranked[:, 1]).min() > 1e-3
    expected = scores(logits, labels)

    out = tmp_path / "out"
    result = run_eval(f"--data_path={workspace['root'] / 'imagenet'}", f"--checkpoint_file_path={checkpoint}",
                      "--batch_size=4", f"--output_path={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "eval_results.json").read_text())
    assert record["count"] == expected["count"] == sum(VAL_COUNTS.values())
    assert record["top1"] == pytest.approx(expected["top1"], abs=1e-9)
    assert record["top5"] == pytest.approx(expected["top5"], abs=1e-9)
    assert record["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert record["checkpoint"] == str(checkpoint.resolve())
    assert record["config_path"] == str(CONFIG.resolve())
    assert record["net"]["net_name"] == "resnet18" and record["net"]["class_num"] == 1001
    assert record["images_per_second"] > 0
    assert "top-1" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.slow
def test_known_answer_accuracy_and_loss(workspace, tmp_path):
    """fc weight 0 and a crafted bias: every image gets the logits ``bias``, so the scores follow
    from the labels alone: top-1 hits class 1, top-5 hits classes {1, 3, 5, 6, 7}."""
    bias = workspace["bias"].astype(np.float64)
    log_probs = bias - np.log(np.exp(bias).sum())
    labels = np.array([label for _, label in workspace["samples"]])
    output_file = tmp_path / "scores" / "r18.json"
    result = run_eval(f"--data_path={workspace['root'] / 'imagenet'}",
                      f"--checkpoint_file_path={workspace['root'] / 'r18_c10.ckpt'}", "--class_num=10",
                      "--batch_size=3", f"--output_file={output_file}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads(output_file.read_text())
    n = sum(VAL_COUNTS.values())
    assert record["count"] == n
    assert record["top1"] == pytest.approx(VAL_COUNTS["n02"] / n)
    assert record["top5"] == pytest.approx((VAL_COUNTS["n02"] + VAL_COUNTS["n04"]) / n)
    assert record["loss"] == pytest.approx(-log_probs[labels].mean(), rel=1e-5)


def _assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    message = lines[0]
    assert message.startswith("eval.py: error: ")
    for fragment in fragments:
        assert fragment in message, message
    return message


def _bad_checkpoint(workspace, kind: str) -> Path:
    root = workspace["root"]
    if kind == "missing":
        return root / "no_such.ckpt"
    if kind == "text":
        path = root / "notes.ckpt"
        path.write_text("these are not weights\n")
        return path
    path = root / "truncated.ckpt"
    data = (root / "r18_c10.ckpt").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind, fragments", [
    ("missing", ["no_such.ckpt", "does not exist"]),
    ("text", ["notes.ckpt", "not a MindSpore checkpoint"]),
    ("truncated", ["truncated.ckpt", "truncated"]),
])
def test_unreadable_checkpoint_is_one_line(workspace, tmp_path, kind, fragments):
    checkpoint = _bad_checkpoint(workspace, kind)
    result = run_eval(f"--data_path={workspace['root'] / 'imagenet'}", f"--checkpoint_file_path={checkpoint}",
                      "--class_num=10", f"--output_path={tmp_path}", cwd=tmp_path)
    _assert_one_line_error(result, *fragments)


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint, options, fix", [
    ("r18_c10.ckpt", ["--net_name=resnet34", "--class_num=10"], "--net_name resnet18"),
    ("r18_c10.ckpt", [], "--class_num 10"),
    ("r18_c10_cov64.ckpt", ["--class_num=10"], "--cov_dim 64"),
])
def test_checkpoint_of_another_network_is_one_line(workspace, tmp_path, checkpoint, options, fix):
    path = workspace["root"] / checkpoint
    result = run_eval(f"--data_path={workspace['root'] / 'imagenet'}", f"--checkpoint_file_path={path}",
                      f"--output_path={tmp_path}", *options, cwd=tmp_path)
    _assert_one_line_error(result, checkpoint, "does not fit the network", fix)


def test_missing_checkpoint_option_is_one_line(tmp_path):
    result = run_eval(f"--data_path={tmp_path}", f"--output_path={tmp_path}", cwd=tmp_path)
    _assert_one_line_error(result, "--checkpoint_file_path")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_sum_their_counts(workspace, tmp_path):
    """msrun with 2 CPU workers: each scores its half (5 images, batches 3 + 2); the totals match the
    known answer of the single-device run."""
    msrun = Path(sys.executable).with_name("msrun")
    if not msrun.exists():
        pytest.skip("msrun not installed beside this Python")
    env = dict(os.environ, GLOG_v="3", PYTHONPATH=str(REPO_ROOT),
               PATH=f"{msrun.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    output_file = tmp_path / "dp.json"
    command = [str(msrun), "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", f"--log_dir={tmp_path / 'logs'}", "--join=True",
               "--cluster_time_out=120", str(REPO_ROOT / "eval.py"), f"--config_path={CONFIG}",
               "--device_target=CPU", f"--eval_image_size={IMAGE_SIZE}", "--num_parallel_workers=1",
               f"--data_path={workspace['root'] / 'imagenet'}", "--class_num=10", "--batch_size=3",
               f"--checkpoint_file_path={workspace['root'] / 'r18_c10.ckpt'}", "--run_distribute=True",
               "--device_num=2", f"--output_file={output_file}"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    logs = "".join(p.read_text(errors="replace") for p in sorted((tmp_path / "logs").glob("worker_*.log")))
    assert result.returncode == 0, result.stdout[-2000:] + logs[-3000:]
    record = json.loads(output_file.read_text())
    n = sum(VAL_COUNTS.values())
    assert record["ranks"] == 2 and record["count"] == n
    assert record["top1"] == pytest.approx(VAL_COUNTS["n02"] / n)
    assert record["top5"] == pytest.approx((VAL_COUNTS["n02"] + VAL_COUNTS["n04"]) / n)
    bias = workspace["bias"].astype(np.float64)
    labels = np.array([label for _, label in workspace["samples"]])
    assert record["loss"] == pytest.approx(-(bias - np.log(np.exp(bias).sum()))[labels].mean(), rel=1e-5)
    assert "10/10" in logs  # rank 0's progress line


@pytest.mark.slow
def test_eval_weights_picks_the_ema_copy_and_auto_follows_best_weights(workspace, tmp_path):
    """The crafted known-answer weights stored as the EMA (``ema.<name>``) of a checkpoint whose raw
    classifier says class 0 for every image: ``--eval_weights ema`` (and ``auto`` when the checkpoint's
    ``best_weights`` entry says ``ema``) scores the known answer, ``raw`` scores class 0."""
    from src.models.ema_weights import BEST_WEIGHTS_ENTRY
    from src.models.weights import is_bookkeeping
    from src.runtime.checkpoint import load_checkpoint_file, save_checkpoint_atomic

    crafted = load_checkpoint_file(workspace["root"] / "r18_c10.ckpt")
    entries = dict(crafted)
    entries.update({f"ema.{name}": value for name, value in crafted.items() if not is_bookkeeping(name, value)})
    raw_bias = np.zeros(10, np.float32)
    raw_bias[0] = 9.0
    assert "fc.bias" in entries
    entries["fc.bias"] = ms.Tensor(raw_bias)
    n, data = sum(VAL_COUNTS.values()), f"--data_path={workspace['root'] / 'imagenet'}"
    for which, best, expected_top1 in (("ema", None, VAL_COUNTS["n02"] / n), ("raw", None, VAL_COUNTS["n01"] / n),
                                       ("auto", "ema", VAL_COUNTS["n02"] / n), ("auto", None, VAL_COUNTS["n01"] / n)):
        checkpoint = tmp_path / f"{which}_{best}.ckpt"
        save_checkpoint_atomic(entries, checkpoint, {BEST_WEIGHTS_ENTRY: best} if best else None)
        output_file = tmp_path / f"{which}_{best}.json"
        result = run_eval(data, f"--checkpoint_file_path={checkpoint}", "--class_num=10", "--batch_size=5",
                          f"--eval_weights={which}", f"--output_file={output_file}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        record = json.loads(output_file.read_text())
        assert record["top1"] == pytest.approx(expected_top1), (which, best)
        assert record["weights"] == ("ema" if expected_top1 == VAL_COUNTS["n02"] / n else "raw")


def test_a_structure_key_unlike_the_checkpoints_saved_config_is_warned(workspace, tmp_path, caplog):
    """arch_style (like post_norm, isqrt_iters, layer4_stride) leaves every parameter shape alone, so the
    weights load either way; the checkpoint's saved config tells, and the loader says so. The same config
    loads silently."""
    import dataclasses

    from src.config import load_config
    from src.engine.checkpoint_network import load_checkpoint_network
    from src.runtime.checkpoint import load_checkpoint_file, save_checkpoint_atomic

    trained, _ = load_config([f"--config_path={CONFIG}", "--net_name=resnet18", "--class_num=10",
                              "--arch_style=mindspore", "--device_target=CPU"])
    checkpoint = tmp_path / "with_config.ckpt"
    save_checkpoint_atomic(load_checkpoint_file(workspace["root"] / "r18_c10.ckpt"), checkpoint,
                           {"config": trained.to_yaml()})
    same = dataclasses.replace(trained, checkpoint_file_path=str(checkpoint), eval_image_size=IMAGE_SIZE)
    with caplog.at_level(logging.WARNING):
        load_checkpoint_network(same, "stock")
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    other = dataclasses.replace(same, arch_style="torch")
    with caplog.at_level(logging.WARNING):
        built = load_checkpoint_network(other, "stock")
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and built.config.arch_style == "torch" and built.weights == "raw"
    assert warnings[0].startswith(f"{checkpoint}: this config builds another network")
    assert "arch_style: 'mindspore' -> 'torch'" in warnings[0]
