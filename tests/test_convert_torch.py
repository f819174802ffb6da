"""PyTorch DropCov checkpoints -> MindSpore: name mapping, file reading, errors, and equal evaluation logits.

The PyTorch side is the authors' network rewritten in tests/torch_reference.py; the MindSpore side is
``create_model(..., arch_style='torch')``.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from src.errors import DropCovError  # noqa: E402
from src.models.torch_mapping import (  # noqa: E402
    convert_torch_state_dict,
    infer_head_sizes,
    mindspore_name,
    strip_wrapper_prefix,
)
from tests.torch_reference import build_reference, randomise  # noqa: E402

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
    ("resnet34", 32, True, False),
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
    from tests.torch_reference import adaptive_drop_rate as torch_drop_rate

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
    """Wrong net_name, wrong class_num and a non-.ckpt output each exit 1 with one line on stderr."""
    from src.tools.convert_torch import main

    _, path = save_reference(tmp_path, "resnet18", 32, wrapped=True, seed=1)
    output = tmp_path / "out.ckpt"
    cases = [
        (["--net_name", "resnet34", str(path), str(output)], "missing from the checkpoint"),
        (["--net_name", "resnet50", str(path), str(output)], "missing from the checkpoint"),
        (["--net_name", "resnet18", "--class_num", "10", str(path), str(output)], "fc.weight has shape"),
        (["--net_name", "resnet18", str(path), str(tmp_path / "out.bin")], "must end in .ckpt"),
        ([str(path), str(output)], "no net_name"),
    ]
    for argv, expected in cases:
        assert main(argv) == 1
        error = capsys.readouterr().err
        assert expected in error and error.count("\n") == 1, (argv, error)
    assert not output.exists()


# ---------------------------------------------------------------- configs

@pytest.mark.parametrize("net_name", ["resnet34", "resnet50"])
def test_torch_configs_describe_the_pytorch_network(repo_root, net_name):
    from src.config import load_config
    from src.tools.convert_torch import _config_values

    path = str(repo_root / "config" / f"{net_name}_dropcov_torch_config.yaml")
    config, _ = load_config(["--config_path", path])
    assert (config.net_name, config.head, config.arch_style) == (net_name, "dropcov", "torch")
    assert (config.cov_dim, config.class_num, config.post_norm, config.eval_image_size) == (256, 1000, "none", 224)
    assert config.layer4_stride in (0, 1)
    assert _config_values(path) == {"net_name": net_name, "cov_dim": 256, "class_num": 1000}


def test_mindspore_style_config_is_refused(repo_root, tmp_path, capsys):
    from src.tools.convert_torch import main

    path = str(repo_root / "config" / "resnet50_imagenet2012_config.yaml")
    assert main(["--config_path", path, str(tmp_path / "in.pth"), str(tmp_path / "out.ckpt")]) == 1
    error = capsys.readouterr().err
    assert "arch_style" in error and "torch" in error and error.count("\n") == 1
