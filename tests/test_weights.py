"""What a checkpoint means for a network: bookkeeping, strict loading, description, the config that fits,
fine-tuning to another class count, dtype casts."""
import mindspore as ms
import numpy as np
import pytest
from checkpoint_helpers import (
    CONFIG_TEXT,
    LayoutNet,
    TinyNet,
    assert_one_line,
    batch,
    layout,
    make_training,
    net_values,
)

from src.cli import error_line
from src.errors import DropCovError
from src.models import weights
from src.runtime import checkpoint as ckpt


def test_bookkeeping_entries_are_ignored(tmp_path):
    net, optimizer, train_step = make_training()
    train_step(*batch(0))
    path = ckpt.save_checkpoint_atomic(train_step, tmp_path / "train.ckpt",
                                       {"epoch_num": 1, "global_step": 1, "step_num": 1, "config": CONFIG_TEXT,
                                        "best_metric": 0.25})
    fresh = TinyNet()
    report = weights.load_network_weights(fresh, ckpt.load_checkpoint_file(path), strict=True)
    assert sorted(report.loaded) == sorted(p.name for p in fresh.get_parameters())
    assert not (report.missing or report.unexpected or report.mismatched)
    assert {"moments.conv1.weight", "global_step", "momentum", "learning_rate", "epoch_num", "step_num",
            "config", "best_metric"} <= set(report.ignored)
    expected = net_values(net)
    for name, value in net_values(fresh).items():
        np.testing.assert_array_equal(value, expected[name])


def test_strict_mismatch_leaves_the_network_untouched(tmp_path):
    path = ckpt.save_checkpoint_atomic(TinyNet(num_classes=5), tmp_path / "five.ckpt")
    net = TinyNet(num_classes=3)
    before = net_values(net)
    with pytest.raises(DropCovError) as error:
        weights.load_network_weights(net, ckpt.load_checkpoint_file(path), source=str(path))
    assert_one_line(error, str(path), "fc.weight: checkpoint 5x4 vs network 3x4", "fc.bias")
    for name, value in net_values(net).items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("layout_name, backbone, blocks, cov_dim", [
    ("resnet18_dropcov_1001", "resnet18", [2, 2, 2, 2], 128),
    ("resnet34_dropcov_1001", "resnet34", [3, 4, 6, 3], 128),
    ("resnet50_dropcov_1001", "resnet50", [3, 4, 6, 3], 128),
])
def test_describe_published_layouts(layout_name, backbone, blocks, cov_dim):
    description = weights.describe_checkpoint(layout(layout_name))
    assert description["backbone"] == backbone and description["blocks_per_layer"] == blocks
    assert description["head"] == "dropcov" and description["cov_dim"] == cov_dim
    assert description["class_num"] == 1001 and description["feature_dim"] == 8256
    assert weights.format_description(description) == f"{backbone} / head dropcov / cov_dim 128 / class_num 1001"


def test_describe_gap_checkpoint():
    shapes = {name: shape for name, shape in layout("resnet50_dropcov_1001").items()
              if not name.startswith(("layer_reduce", "eca_layer"))}
    shapes["fc.weight"] = (10, 2048)
    shapes["fc.bias"] = (10,)
    description = weights.describe_checkpoint(shapes)
    assert (description["backbone"], description["head"], description["cov_dim"], description["class_num"]) == (
        "resnet50", "gap", None, 10)


def test_error_names_the_backbone_that_fits():
    net = LayoutNet(layout("resnet18_dropcov_1001"))
    with pytest.raises(DropCovError) as error:
        weights.load_network_weights(net, layout("resnet50_dropcov_1001"), source="r50.ckpt")
    assert_one_line(error, "r50.ckpt does not fit", "missing (layer1.0.bn1d", "unexpected (", "more)",
                    "r50.ckpt does not fit the network: it is resnet50 / head dropcov / cov_dim 128 / class_num "
                    "1001 but the config builds resnet18", "use --net_name resnet50")


def test_error_names_the_class_count_that_fits():
    net = LayoutNet(layout("resnet18_dropcov_1001", class_num=10))
    with pytest.raises(DropCovError) as error:
        weights.load_network_weights(net, layout("resnet18_dropcov_1001"), source="r18.ckpt")
    assert_one_line(error, "fc.weight: checkpoint 1001x8256 vs network 10x8256", "use --class_num 1001",
                    "--pre_trained")
    assert "missing" not in str(error.value) and "--net_name" not in str(error.value)


def test_error_names_the_cov_dim_that_fits():
    net = LayoutNet(layout("resnet34_dropcov_1001"))
    with pytest.raises(DropCovError) as error:
        weights.load_network_weights(net, layout("resnet34_dropcov_1001", cov_dim=256), source="r34.ckpt")
    assert_one_line(error, "layer_reduce.weight: checkpoint 256x512x1x1 vs network 128x512x1x1",
                    "cov_dim 256", "use --cov_dim 256")


def test_error_spots_a_wrapper_prefix():
    net = TinyNet()
    shapes = {f"network.{p.name}": tuple(p.shape) for p in net.get_parameters()}
    with pytest.raises(DropCovError) as error:
        weights.load_network_weights(net, shapes)
    assert_one_line(error, "prefix 'network.'")


def test_adapt_for_finetune_drops_a_classifier_of_another_class_count(tmp_path):
    source_net = TinyNet(num_classes=5)
    path = ckpt.save_checkpoint_atomic(source_net, tmp_path / "five.ckpt")
    saved = ckpt.load_checkpoint_file(path)
    net = TinyNet(num_classes=3)
    fresh_fc = net.fc.weight.asnumpy().copy()
    adapted, dropped = weights.adapt_for_finetune(saved, net)
    assert sorted(dropped) == ["fc.bias", "fc.weight"] and "fc.weight" in saved
    report = weights.load_network_weights(net, adapted, allow_missing=dropped)
    assert "conv1.weight" in report.loaded and not report.missing
    np.testing.assert_array_equal(net.conv1.weight.asnumpy(), source_net.conv1.weight.asnumpy())
    np.testing.assert_array_equal(net.fc.weight.asnumpy(), fresh_fc)

    same, none_dropped = weights.adapt_for_finetune(saved, TinyNet(num_classes=5))
    assert none_dropped == [] and set(same) == set(saved)


def test_error_points_to_the_config_file_that_fits(tmp_path, monkeypatch):
    from src.config import loader

    for name, keys in [("resnet50_imagenet2012_config.yaml", "cov_dim: 128\nclass_num: 1001"),
                       ("resnet50_torch_config.yaml", "cov_dim: 256\nclass_num: 1000"),
                       ("resnet50_other_config.yaml", "cov_dim: 256\nclass_num: 10"),
                       ("broken.yaml", "net_name: [unclosed")]:
        (tmp_path / name).write_text(f"net_name: resnet50\nhead: dropcov\n{keys}\n---\nnet_name: help text\n")
    monkeypatch.setattr(loader, "CONFIG_DIR", tmp_path)
    net = LayoutNet(layout("resnet18_dropcov_1001"))
    with pytest.raises(DropCovError) as error:
        weights.load_network_weights(net, layout("resnet50_dropcov_1001", cov_dim=256, class_num=1000))
    error.value.args = (error_line(error.value),)  # the line the entry points print
    assert_one_line(error, "use --net_name resnet50 --cov_dim 256 --class_num 1000 "
                           "(config/resnet50_torch_config.yaml)")
    assert "--pre_trained" not in str(error.value)


def test_describe_a_real_network():
    from src.models import create_model

    description = weights.describe_network(create_model("resnet18", num_classes=1001))
    assert description == weights.describe_checkpoint(layout("resnet18_dropcov_1001"))


def test_float16_values_are_cast_to_the_network_dtype(tmp_path):
    source = TinyNet()
    half = {p.name: ms.Tensor(p.asnumpy().astype(np.float16)) for p in source.get_parameters()}
    path = ckpt.save_checkpoint_atomic(half, tmp_path / "half.ckpt", {"config": CONFIG_TEXT})
    saved = ckpt.load_checkpoint_file(path)
    assert saved["conv1.weight"].dtype == ms.float16 and saved["config"] == CONFIG_TEXT
    net = TinyNet()
    weights.load_network_weights(net, saved)
    assert net.conv1.weight.dtype == ms.float32
    np.testing.assert_array_equal(net.conv1.weight.asnumpy(),
                                  source.conv1.weight.asnumpy().astype(np.float16).astype(np.float32))


def test_adopt_checkpoint_widths_builds_the_checkpoints_head(repo_root):
    """widths_from_checkpoint: cov_dim and class_num become the checkpoint's; without it nothing changes."""
    from src.config import load_config
    from src.models.weights import adopt_checkpoint_widths

    shapes = {"conv1.weight": (64, 3, 7, 7), "layer1.0.conv1.weight": (64, 64, 3, 3),
              "layer_reduce.weight": (128, 512, 1, 1), "fc.weight": (1000, 8256), "fc.bias": (1000,)}
    torch_config, _ = load_config(["--config_path", str(repo_root / "config" / "resnet34_dropcov_torch_config.yaml")])
    adopted = adopt_checkpoint_widths(torch_config, shapes)
    assert (adopted.cov_dim, adopted.class_num) == (128, 1000) and torch_config.cov_dim == 256
    assert adopted.to_dict() == dict(torch_config.to_dict(), cov_dim=128)
    plain, _ = load_config(["--net_name", "resnet34", "--cov_dim", "256"])
    assert adopt_checkpoint_widths(plain, shapes) is plain
    gap = {"conv1.weight": (64, 3, 7, 7), "fc.weight": (10, 512), "fc.bias": (10,)}
    assert (adopt_checkpoint_widths(torch_config, gap).cov_dim, adopt_checkpoint_widths(torch_config, gap).class_num) \
        == (256, 10)
