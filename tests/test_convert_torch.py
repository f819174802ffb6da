"""PyTorch DropCov checkpoints -> MindSpore: name mapping, file reading, errors, and equal evaluation logits.

The PyTorch side is the authors' network rewritten in torch_reference/resnet.py; the MindSpore side is
``create_model(..., arch_style='torch')``.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from readme_helpers import assert_eval_results_equal_pytorch, readme_commands, resize_256_crop_224_batch  # noqa: E402

from src.errors import DropCovError  # noqa: E402
from src.models.torch_mapping import (  # noqa: E402
    convert_torch_state_dict,
    infer_head_sizes,
    mindspore_name,
    strip_wrapper_prefix,
)
from torch_reference.resnet import BLOCKS, build_reference, randomise  # noqa: E402

LAYOUT_NETS = ("resnet18", "resnet34", "resnet50")


def read_layout(repo_root, net_name: str) -> dict[str, tuple[int, ...]]:
    """name -> shape of the published MindSpore checkpoint (cov_dim 128, 1001 classes), in order."""
    lines = (repo_root / "tests" / "data" / "checkpoint_layout" / f"{net_name}_dropcov_1001.tsv").read_text()
    rows = [line.split("\t") for line in lines.strip().splitlines()[1:]]
    return {name: tuple(int(size) for size in shape.split("x")) for name, shape, _ in rows}


@pytest.fixture(scope="module")
def small_resnet18_state_dict() -> dict:
    """A ResNet-18 + DropCov state dict (cov_dim 128, 1001 classes) matching the published layout."""
    return build_reference("resnet18", num_classes=1001, cov_dim=128).state_dict()


@pytest.mark.parametrize("net_name", LAYOUT_NETS)
def test_mapped_names_and_shapes_equal_published_layout(repo_root, net_name):
    """Every PyTorch key lands on the published MindSpore parameter of the same shape, in layout order."""
    layout = read_layout(repo_root, net_name)
    state_dict = build_reference(net_name, num_classes=1001, cov_dim=128).state_dict()
    converted = convert_torch_state_dict(state_dict, net_name, layout)
    assert list(converted) == list(layout)
    assert {name: array.shape for name, array in converted.items()} == layout
    torch_eca = state_dict["eca_layer.conv.weight"].numpy()
    assert torch_eca.shape == (1, 1, 3)
    np.testing.assert_array_equal(converted["eca_layer.conv.weight"][0, 0, 0], torch_eca[0, 0])
    assert all(array.dtype == np.float32 for array in converted.values())


@pytest.mark.parametrize("net_name, torch_name, expected", [
    ("resnet18", "bn1.weight", "bn1.gamma"),
    ("resnet18", "bn1.running_var", "bn1.moving_variance"),
    ("resnet18", "layer2.0.bn1.bias", "layer2.0.bn1d.beta"),
    ("resnet34", "layer3.5.bn2.running_mean", "layer3.5.bn2d.moving_mean"),
    ("resnet34", "layer2.0.downsample.0.weight", "layer2.0.down_sample_layer.0.weight"),
    ("resnet34", "layer2.0.downsample.1.running_var", "layer2.0.down_sample_layer.1.moving_variance"),
    ("resnet50", "layer1.0.bn1.weight", "layer1.0.bn1.gamma"),
    ("resnet50", "layer4.2.bn3.running_mean", "layer4.2.bn3.moving_mean"),
    ("resnet50", "layer4.2.conv3.weight", "layer4.2.conv3.weight"),
    ("resnet50", "layer_reduce_bn.bias", "layer_reduce_bn.beta"),
    ("resnet50", "layer_reduce.weight", "layer_reduce.weight"),
    ("resnet50", "fc.bias", "fc.bias"),
    ("resnet50", "eca_layer.conv.weight", "eca_layer.conv.weight"),
    ("resnet50", "layer1.0.bn1.num_batches_tracked", None),
])
def test_mindspore_name(net_name, torch_name, expected):
    assert mindspore_name(torch_name, net_name) == expected


def test_wrapper_prefix_and_head_sizes(small_resnet18_state_dict):
    wrapped = {"module." + name: value for name, value in small_resnet18_state_dict.items()}
    assert list(strip_wrapper_prefix(wrapped)) == list(small_resnet18_state_dict)
    assert infer_head_sizes(wrapped) == (128, 1001)
    assert infer_head_sizes({"conv1.weight": np.zeros((64, 3, 7, 7))}) == (None, None)


def test_unknown_keys_are_one_line_error(repo_root, small_resnet18_state_dict):
    state_dict = dict(small_resnet18_state_dict, **{"head.extra.weight": torch.zeros(3),
                                                    "layer1.0.bn3.weight": torch.zeros(64)})
    with pytest.raises(DropCovError, match=r"2 key\(s\) have no parameter") as caught:
        convert_torch_state_dict(state_dict, "resnet18", read_layout(repo_root, "resnet18"), source="x.pth")
    message = str(caught.value)
    assert "\n" not in message and "x.pth" in message
    assert "head.extra.weight" in message and "layer1.0.bn3.weight" in message


def test_missing_keys_are_one_line_error(repo_root, small_resnet18_state_dict):
    state_dict = {name: value for name, value in small_resnet18_state_dict.items()
                  if not name.startswith(("layer_reduce_bn.", "fc."))}
    with pytest.raises(DropCovError, match=r"^[^;]*6 parameter\(s\) of resnet18 \+ DropCov missing") as caught:
        convert_torch_state_dict(state_dict, "resnet18", read_layout(repo_root, "resnet18"))
    message = str(caught.value)
    assert "\n" not in message
    for name in ("layer_reduce_bn.gamma", "layer_reduce_bn.moving_variance", "fc.weight", "fc.bias"):
        assert name in message


def test_unknown_and_missing_keys_reported_together(repo_root, small_resnet18_state_dict):
    """A renamed key shows up on both sides of the one-line message."""
    state_dict = dict(small_resnet18_state_dict)
    state_dict["fc.kernel"] = state_dict.pop("fc.weight")
    with pytest.raises(DropCovError, match=r"1 key\(s\) have no parameter.*fc\.kernel; 1 parameter\(s\) of "
                                           r"resnet18 \+ DropCov missing from the checkpoint: fc\.weight;"):
        convert_torch_state_dict(state_dict, "resnet18", read_layout(repo_root, "resnet18"))


def test_wrong_backbone_is_reported(repo_root):
    """A ResNet-34 checkpoint offered as ResNet-18 names the extra blocks."""
    state_dict = build_reference("resnet34", num_classes=1001, cov_dim=128).state_dict()
    with pytest.raises(DropCovError, match=r"layer1\.2\.conv1\.weight"):
        convert_torch_state_dict(state_dict, "resnet18", read_layout(repo_root, "resnet18"))


def test_shape_mismatch_names_parameter(repo_root):
    state_dict = build_reference("resnet18", num_classes=1000, cov_dim=128).state_dict()
    with pytest.raises(DropCovError, match=r"fc\.weight has shape \(1000, 8256\).*\(1001, 8256\)"):
        convert_torch_state_dict(state_dict, "resnet18", read_layout(repo_root, "resnet18"))


def test_unknown_net_name(small_resnet18_state_dict):
    with pytest.raises(DropCovError, match="resnet20"):
        convert_torch_state_dict(small_resnet18_state_dict, "resnet20", {})


# ---------------------------------------------------------------- reading .pth files (torch.load)

@pytest.mark.parametrize("wrapping", ["plain", "state_dict_module", "model", "training_checkpoint"])
def test_load_torch_state_dict_layouts(tmp_path, small_resnet18_state_dict, wrapping):
    from src.tools.convert_torch import load_torch_state_dict

    state_dict = small_resnet18_state_dict
    module_prefixed = {"module." + name: value for name, value in state_dict.items()}
    saved = {
        "plain": state_dict,
        "state_dict_module": {"state_dict": module_prefixed},
        "model": {"model": state_dict, "epoch": 3},
        # what the authors' main.py saves: epoch, arch, state_dict, best_acc1 (a tensor), optimizer
        "training_checkpoint": {"epoch": 100, "arch": "resnet18_ACD", "state_dict": module_prefixed,
                                "best_acc1": torch.tensor(73.5), "optimizer": {"state": {}, "param_groups": []}},
    }[wrapping]
    path = tmp_path / "model.pth.tar"
    torch.save(saved, path)
    loaded = strip_wrapper_prefix(load_torch_state_dict(path))
    assert list(loaded) == list(state_dict)
    assert all(torch.equal(loaded[name], state_dict[name]) for name in state_dict)


class _Opaque:
    """An arbitrary pickled object: weights_only loading must refuse it."""


def test_load_refuses_arbitrary_pickle(tmp_path):
    from src.tools.convert_torch import load_torch_state_dict

    path = tmp_path / "opaque.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": _Opaque()}, path)
    with pytest.raises(DropCovError, match="--trust_pickle"):
        load_torch_state_dict(path)
    assert list(load_torch_state_dict(path, trust_pickle=True)) == ["conv1.weight"]


def test_load_errors(tmp_path):
    from src.tools.convert_torch import load_torch_state_dict

    with pytest.raises(DropCovError, match="does not exist"):
        load_torch_state_dict(tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DropCovError, match="garbage.pth"):
        load_torch_state_dict(garbage)
    no_tensors = tmp_path / "no_tensors.pth"
    torch.save({"epoch": 1, "arch": "resnet18"}, no_tensors)
    with pytest.raises(DropCovError, match="no tensors found"):
        load_torch_state_dict(no_tensors)


# ---------------------------------------------------------------- end to end: .pth -> .ckpt -> logits

def relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: the error relative to the logit scale."""
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def mindspore_logits(checkpoint_path, net_name: str, cov_dim: int, images: np.ndarray) -> np.ndarray:
    """Evaluation logits of create_model(arch_style='torch') loaded from the converted checkpoint."""
    import mindspore as ms

    from src.models import create_model

    network = create_model(net_name, num_classes=1000, head="dropcov", cov_dim=cov_dim, post_norm="none",
                           adaptive_dropout=True, arch_style="torch")
    parameters = ms.load_checkpoint(str(checkpoint_path))
    not_loaded, unused = ms.load_param_into_net(network, parameters)
    assert not not_loaded and not unused, (not_loaded, unused)
    network.set_train(False)
    return network(ms.Tensor(images)).asnumpy()


def save_reference(tmp_path, net_name: str, cov_dim: int, wrapped: bool, seed: int):
    """A randomised reference network and its .pth file (plain, or {'state_dict': module.-prefixed})."""
    reference = randomise(build_reference(net_name, num_classes=1000, cov_dim=cov_dim), seed=seed).eval()
    state_dict = reference.state_dict()
    if wrapped:
        path = tmp_path / f"{net_name}_dropcov.pth.tar"
        torch.save({"epoch": 100, "state_dict": {"module." + k: v for k, v in state_dict.items()}}, path)
    else:
        path = tmp_path / f"{net_name}_dropcov.pth"
        torch.save(state_dict, path)
    return reference, path


@pytest.mark.slow
@pytest.mark.parametrize("net_name, cov_dim, wrapped, use_config", [
    ("resnet18", 32, False, False),
    ("resnet34", 32, True, None),  # nothing given: backbone and widths read from the file
    # the authors' setup through its config: 256-d head (32,896-d vector, fc 1000 x 32896)
    ("resnet50", 256, True, True),
])
def test_converted_checkpoint_reproduces_pytorch_logits(repo_root, tmp_path, net_name, cov_dim, wrapped,
                                                        use_config):
    """Random weights and BN statistics: MindSpore eval logits equal PyTorch's to 1e-4 relative."""
    from src.tools.convert_torch import main

    reference, path = save_reference(tmp_path, net_name, cov_dim, wrapped, seed=len(net_name) + cov_dim)
    output = tmp_path / f"{net_name}_dropcov_torch.ckpt"
    if use_config:
        config = repo_root / "config" / f"{net_name}_dropcov_torch_config.yaml"
        assert main(["--config_path", str(config), str(path), str(output)]) == 0
    elif use_config is None:
        assert main([str(path), str(output)]) == 0
    else:
        assert main(["--net_name", net_name, str(path), str(output)]) == 0
    assert output.is_file() and not list(tmp_path.glob("*.tmp.ckpt"))

    # 64x64 inputs: output stride 16 (layer4 stride 1) leaves a 4x4 map, N = 16 positions.
    images = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images)).numpy()
    actual = mindspore_logits(output, net_name, cov_dim, images)
    assert actual.shape == expected.shape == (2, 1000)
    difference = relative_difference(actual, expected)
    print(f"{net_name} cov_dim {cov_dim}: max relative logit difference {difference:.2e}")
    assert difference < 1e-4


def test_training_branch_matches_pytorch(tmp_path):
    """The converted ECA weight gives PyTorch's channel weights and adaptive drop rate on the same features.

    Evaluation skips this branch, so the logits test cannot see the (1, 1, 3) -> (1, 1, 1, 3) reshape.
    """
    import mindspore as ms

    from src.models import create_model
    from src.models.gcp import adaptive_drop_rate as mindspore_drop_rate
    from src.models.gcp import covariance_pool as mindspore_covariance
    from src.tools.convert_torch import target_parameter_shapes
    from torch_reference.resnet import adaptive_drop_rate as torch_drop_rate

    cov_dim = 32
    reference = randomise(build_reference("resnet18", num_classes=10, cov_dim=cov_dim), seed=5)
    parameters = convert_torch_state_dict(reference.state_dict(), "resnet18",
                                          target_parameter_shapes("resnet18", cov_dim, 10))
    network = create_model("resnet18", num_classes=10, cov_dim=cov_dim, arch_style="torch")
    ms.load_param_into_net(network, {name: ms.Parameter(ms.Tensor(value), name=name)
                                     for name, value in parameters.items()})
    eca = network.head.eca_layer

    features = np.abs(np.random.default_rng(1).standard_normal((3, cov_dim, 4, 4))).astype(np.float32)
    with torch.no_grad():
        torch_reweighted, torch_weights = reference.eca_layer(torch.from_numpy(features))
        torch_rate = float(torch_drop_rate(torch_reweighted, torch_weights))
    weights = eca(ms.Tensor(features)).asnumpy()
    np.testing.assert_allclose(weights, torch_weights.numpy()[:, :, 0, 0], rtol=1e-5, atol=1e-7)
    reweighted = features * weights[:, :, None, None] + features
    np.testing.assert_allclose(reweighted, torch_reweighted.numpy(), rtol=1e-5, atol=1e-6)
    row_sums = mindspore_covariance(ms.Tensor(reweighted)).sum(axis=2)
    rate = float(mindspore_drop_rate(ms.Tensor(weights), row_sums).asnumpy())
    assert abs(rate - torch_rate) < 1e-5, (rate, torch_rate)


def test_cli_errors_are_one_line(tmp_path, capsys):
    """A backbone or class count the file does not hold, and a non-.ckpt output: exit 2, one line on stderr."""
    from src.tools.convert_torch import main

    _, path = save_reference(tmp_path, "resnet18", 32, wrapped=True, seed=1)
    output = tmp_path / "out.ckpt"
    cases = [
        (["--net_name", "resnet34", str(path), str(output)], "holds resnet18 + DropCov with net_name resnet18 (not resnet34)"),
        (["--net_name", "resnet50", str(path), str(output)], "net_name resnet18 (not resnet50)"),
        (["--class_num", "10", "--cov_dim", "32", str(path), str(output)], "class_num 1000 (not 10)"),
        (["--cov_dim", "64", str(path), str(output)], "cov_dim 32 (not 64)"),
        ([str(path), str(tmp_path / "out.bin")], "must end in .ckpt"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert error.startswith("convert_torch: error: ") and expected in error and error.count("\n") == 1, (argv, error)
    assert not output.exists()


def write_mindspore_checkpoint(path) -> None:
    import mindspore as ms

    ms.save_checkpoint([{"name": "fc.weight", "data": ms.Tensor(np.ones((2, 3), np.float32))}], str(path))


@pytest.mark.parametrize("kind, expected", [
    ("random", "is not a PyTorch checkpoint (unknown content starting 13 "),
    ("mindspore", "is a MindSpore checkpoint (.ckpt), not a PyTorch one: there is nothing to convert"),
    ("jpeg", "is not a PyTorch checkpoint (it is a JPEG image)"),
    ("empty", "is empty (0 bytes): not a PyTorch checkpoint"),
])
def test_files_that_are_not_pytorch_checkpoints_are_named(tmp_path, capsys, kind, expected):
    """The converter says what the file is, as eval.py does, instead of advising --trust_pickle; exit 2."""
    from src.tools.convert_torch import main

    path = tmp_path / ("model.ckpt" if kind == "mindspore" else "model.pth")
    if kind == "random":
        path.write_bytes(b"\x13" + np.random.default_rng(0).bytes(4095))
    elif kind == "mindspore":
        write_mindspore_checkpoint(path)
    elif kind == "jpeg":
        path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(60))
    else:
        path.write_bytes(b"")
    assert main([str(path), str(tmp_path / "out.ckpt")]) == 2
    error = capsys.readouterr().err
    assert error == f"convert_torch: error: {path} {expected}" + error[len(f"convert_torch: error: {path} {expected}"):]
    assert error.count("\n") == 1 and "--trust_pickle" not in error, error
    assert not (tmp_path / "out.ckpt").exists()


@pytest.mark.parametrize("net_name, cov_dim, classes", [("resnet18", 16, 7), ("resnet34", 24, 1000),
                                                        ("resnet50", 32, 10), ("resnet101", 16, 5)])
def test_backbone_and_widths_are_read_from_the_layer_names(net_name, cov_dim, classes):
    from src.tools.convert_torch import network_of

    state_dict = build_reference(net_name, num_classes=classes, cov_dim=cov_dim).state_dict()
    wrapped = {"module." + name: value for name, value in state_dict.items()}
    assert network_of(wrapped, "x.pth") == {"net_name": net_name, "cov_dim": cov_dim, "class_num": classes}
    without_head = {name: value for name, value in state_dict.items() if not name.startswith("layer_reduce")}
    with pytest.raises(DropCovError, match="not a DropCov checkpoint"):
        network_of(without_head, "x.pth")
    last = BLOCKS[net_name][1][0] - 1  # drop layer1's last block: no registered ResNet has that depth
    odd = {name: value for name, value in state_dict.items() if not name.startswith(f"layer1.{last}.")}
    with pytest.raises(DropCovError, match=rf"describe no registered ResNet.*blocks \[{last}, "):
        network_of(odd, "x.pth")


# ---------------------------------------------------------------- configs

@pytest.mark.parametrize("net_name", ["resnet34", "resnet50", "resnet101"])
def test_torch_configs_describe_the_pytorch_network(repo_root, net_name):
    """The authors' network and recipe; the head width is the checkpoint's (widths_from_checkpoint)."""
    from src.config import load_config
    from src.tools.convert_torch import expected_by_config

    path = str(repo_root / "config" / f"{net_name}_dropcov_torch_config.yaml")
    config, _ = load_config(["--config_path", path])
    assert (config.net_name, config.head, config.arch_style) == (net_name, "dropcov", "torch")
    assert (config.cov_dim, config.class_num, config.post_norm, config.eval_image_size) == (256, 1000, "none", 224)
    assert config.widths_from_checkpoint and config.eval_resize_library == "pillow"
    assert (config.conv_init, config.dense_init, config.eca_init) == ("HeNormal", "PyTorchDefault", "PyTorchDefault")
    assert (config.weight_decay, config.decay_norm_and_bias, config.lr_max, config.use_label_smooth) == \
        (1e-4, True, 0.1, False)
    assert (config.lr_milestones, config.lr_gamma, config.epoch_size, config.amp_level) == ([30, 60, 90], 0.1, 100, "O0")
    assert config.layer4_stride in (0, 1)
    assert expected_by_config(path) == {"net_name": net_name}


def test_mindspore_style_config_is_refused(repo_root, tmp_path, capsys):
    from src.tools.convert_torch import main

    path = str(repo_root / "config" / "resnet50_imagenet2012_config.yaml")
    assert main(["--config_path", path, str(tmp_path / "in.pth"), str(tmp_path / "out.ckpt")]) == 2
    error = capsys.readouterr().err
    assert "arch_style" in error and "torch" in error and error.count("\n") == 1


# ---------------------------------------------------------------- README's two commands, either head width

@pytest.mark.slow
@pytest.mark.parametrize("cov_dim", [128, 256])
def test_readme_commands_convert_and_evaluate_either_head_width(repo_root, tmp_path, cov_dim):
    """README's convert + eval commands (ResNet-34, "34 in place of 50"; on CPU) with a 128-d and a 256-d
    checkpoint: eval builds the file's head and scores as the authors did (torchvision's resize): its mean
    cross entropy and top-1 equal the PyTorch reference network's on the same images."""
    import json
    import shlex
    import subprocess
    import sys

    from PIL import Image

    commands = readme_commands("### The authors' PyTorch checkpoints")
    assert len(commands) == 2 and "src.tools.convert_torch" in commands[0] and "eval.py" in commands[1]
    pth, ckpt, data = tmp_path / "r34_dropcov.pth.tar", tmp_path / "resnet34_dropcov_torch.ckpt", tmp_path / "imagenet"
    reference = randomise(build_reference("resnet34", num_classes=1000, cov_dim=cov_dim), seed=cov_dim).eval()
    torch.save({"epoch": 100, "arch": "resnet34_ACD",
                "state_dict": {"module." + k: v for k, v in reference.state_dict().items()}}, pth)
    rng = np.random.default_rng(cov_dim)
    files, labels = [], []
    for label, (height, width) in enumerate([(300, 260), (260, 333)]):
        for index in range(2):
            path = data / "val" / f"n0{label}" / f"{index}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (height + 9 * index, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
            files.append(path)
            labels.append(label)

    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    outputs = []
    for command in commands:
        command = command.replace("50", "34").replace('--device_target="GPU"', '--device_target="CPU"')
        command = command.replace("r34_dropcov.pth.tar", str(pth)).replace("=resnet34_dropcov_torch.ckpt", f"={ckpt}")
        command = command.replace(" resnet34_dropcov_torch.ckpt", f" {ckpt}").replace("IMAGENET", str(data))
        argv = shlex.split(command)
        assert argv[0] == "python"
        argv = [sys.executable] + argv[1:] + (["--output_path", str(tmp_path / "run")] if "eval.py" in command else [])
        result = subprocess.run(argv, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (command, result.stderr[-3000:])
        outputs.append(result.stdout + result.stderr)
    assert f"cov_dim {cov_dim} ({cov_dim * (cov_dim + 1) // 2}-d representation), 1000 classes" in outputs[0]
    if cov_dim != 256:
        assert f"widths_from_checkpoint: cov_dim {cov_dim}, class_num 1000 from {ckpt} (the config said cov_dim 256)" \
            in outputs[1]

    results = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert results["net"]["cov_dim"] == cov_dim and results["net"]["widths_from_checkpoint"] is True
    assert results["count"] == 4
    with torch.no_grad():
        logits = reference(torch.from_numpy(resize_256_crop_224_batch(files, "bilinear"))).double()
    assert_eval_results_equal_pytorch(results, logits, labels, f"cov_dim {cov_dim}")
