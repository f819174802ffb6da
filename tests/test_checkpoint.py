"""Checkpoint I/O: atomic writes, keep-max/best, latest, load errors, layout checks, exact resume state."""
import os
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, nn
from mindspore.common.initializer import initializer

from src.errors import DropCovError
from src.runtime import checkpoint as ckpt

LAYOUT_DIR = Path(__file__).parent / "data" / "checkpoint_layout"
CONFIG_TEXT = "net_name: resnet18\nhead: dropcov\nlr_max: 0.12\n"


class TinyNet(nn.Cell):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, has_bias=False, weight_init="xavier_uniform")
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Dense(4, num_classes)

    def construct(self, x):
        return self.fc(self.bn1(self.conv1(x)).mean((2, 3)))


def make_training(num_classes=3, seed=0):
    ms.set_seed(seed)
    net = TinyNet(num_classes)
    schedule = ms.Tensor(np.linspace(0.1, 0.01, 20).astype(np.float32))
    optimizer = nn.Momentum(net.trainable_params(), schedule, momentum=0.9)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    train_step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), optimizer)
    train_step.set_train()
    return net, optimizer, train_step


def batch(seed):
    rng = np.random.default_rng(seed)
    return (ms.Tensor(rng.normal(size=(2, 3, 6, 6)).astype(np.float32)),
            ms.Tensor(rng.integers(0, 3, size=2).astype(np.int32)))


def net_values(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def layout(name, cov_dim=None, class_num=None):
    """Name -> shape of a published layout, optionally with another cov_dim / class count."""
    shapes = {}
    for line in (LAYOUT_DIR / f"{name}.tsv").read_text().splitlines()[1:]:
        param, shape, _ = line.split("\t")
        shapes[param] = tuple(int(dim) for dim in shape.split("x"))
    if cov_dim:
        in_channels = shapes["layer_reduce.weight"][1]
        shapes["layer_reduce.weight"] = (cov_dim, in_channels, 1, 1)
        for stat in ("moving_mean", "moving_variance", "gamma", "beta"):
            shapes[f"layer_reduce_bn.{stat}"] = (cov_dim,)
        shapes["fc.weight"] = (shapes["fc.weight"][0], cov_dim * (cov_dim + 1) // 2)
    if class_num:
        shapes["fc.weight"] = (class_num, shapes["fc.weight"][1])
        shapes["fc.bias"] = (class_num,)
    return shapes


class LayoutNet(nn.Cell):
    """A network with exactly a layout's parameter names and shapes (lazily initialised, never run)."""

    def __init__(self, shapes):
        super().__init__(auto_prefix=False)
        self.params = ms.ParameterTuple([Parameter(initializer("zeros", shape, ms.float32), name=name)
                                         for name, shape in shapes.items()])

    def construct(self, x):
        return x


def assert_one_line(error, *fragments):
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ------------------------------------------------------------------------------------------------ writing
def test_extra_entries_round_trip(tmp_path):
    net, optimizer, train_step = make_training()
    train_step(*batch(0))
    path = ckpt.save_checkpoint_atomic(train_step, tmp_path / "run.ckpt",
                                       {"epoch_num": 1, "global_step": 5, "config": CONFIG_TEXT})
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]
    saved = ckpt.load_checkpoint_file(path)
    assert ckpt.read_resume_state(saved) == (1, 5)  # extra's global_step replaces the optimizer's (1)
    assert ckpt.read_extra(saved, "config") == CONFIG_TEXT
    assert {"moments.conv1.weight", "moments.fc.bias", "learning_rate", "momentum"} <= set(saved)
    np.testing.assert_array_equal(saved["moments.fc.weight"].asnumpy(), optimizer.moments[3].asnumpy())


def test_training_parameters_lists_network_and_optimizer_once():
    net, optimizer, _ = make_training()
    names = [p.name for p in ckpt.training_parameters(net, optimizer)]
    assert len(names) == len(set(names))
    assert {"bn1.moving_mean", "moments.conv1.weight", "global_step"} <= set(names)


def test_failed_write_leaves_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    net = TinyNet()
    final = ckpt.save_checkpoint_atomic(net, tmp_path / "model.ckpt", {"epoch_num": 1})
    before = final.read_bytes()

    from mindspore.train import serialization

    real_writer = serialization._write_parameter_bytes_data
    calls = []

    def write_then_fail(*args, **kwargs):  # the disk fills up after the first record
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_writer(*args, **kwargs)

    monkeypatch.setattr(serialization, "_write_parameter_bytes_data", write_then_fail)
    net.fc.weight.set_data(ms.Tensor(np.ones((3, 4), np.float32)))
    with pytest.raises(DropCovError) as error:
        ckpt.save_checkpoint_atomic(net, final, {"epoch_num": 2})
    assert_one_line(error, str(final), "No space left")
    assert len(calls) > 1
    assert final.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]

    with pytest.raises(DropCovError):
        ckpt.save_checkpoint_atomic(net, tmp_path / "fresh.ckpt", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_rejects_a_name_without_ckpt_suffix(tmp_path):
    with pytest.raises(DropCovError, match=r"must end in \.ckpt"):
        ckpt.save_checkpoint_atomic(TinyNet(), tmp_path / "model.bin")


def test_manager_keeps_the_newest_and_the_best(tmp_path):
    net = TinyNet()
    manager = ckpt.CheckpointManager(tmp_path, "resnet18", keep_max=2)
    for epoch in range(1, 5):
        manager.save(net, epoch, epoch * 10, {"config": CONFIG_TEXT})
    assert [p.name for p in manager.periodic_checkpoints()] == ["resnet18-3_30.ckpt", "resnet18-4_40.ckpt"]

    assert manager.save_best(net, 0.30, 4, 40)
    assert not manager.save_best(net, 0.20, 5, 50)
    assert manager.save_best(net, 0.50, 6, 60)
    best = ckpt.load_checkpoint_file(tmp_path / "best.ckpt")
    assert ckpt.read_extra(best, "best_metric") == pytest.approx(0.5)
    assert ckpt.read_resume_state(best) == (6, 60)

    manager.save(net, 7, 70)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "resnet18-4_40.ckpt", "resnet18-7_70.ckpt"]
    assert ckpt.read_extra(ckpt.load_checkpoint_file(tmp_path / "resnet18-7_70.ckpt"), "best_metric") == 0.5

    resumed = ckpt.CheckpointManager(tmp_path, "resnet18", keep_max=2, best_metric=0.5)
    resumed.save(net, 8, 80)  # earlier files count towards keep_max
    assert [p.name for p in resumed.periodic_checkpoints()] == ["resnet18-7_70.ckpt", "resnet18-8_80.ckpt"]
    assert not resumed.save_best(net, 0.4, 8, 80)


def test_manager_removes_partials_of_dead_writers_only(tmp_path):
    dead = tmp_path / f".resnet18-1_10.{2 ** 22 + 7}.partial.ckpt"  # above Linux's largest pid
    alive = tmp_path / f".resnet18-1_10.{os.getpid()}.partial.ckpt"
    dead.write_bytes(b"\n\x05partial")
    alive.write_bytes(b"\n\x05partial")
    ckpt.CheckpointManager(tmp_path, "resnet18", keep_max=1)
    assert not dead.exists() and alive.exists()


def test_invalid_keep_max(tmp_path):
    with pytest.raises(DropCovError, match="keep_checkpoint_max"):
        ckpt.CheckpointManager(tmp_path, "resnet18", keep_max=0)


def test_latest_skips_partial_tmp_and_broken_files(tmp_path):
    assert ckpt.latest(tmp_path) is None
    assert ckpt.latest(tmp_path / "absent") is None
    net = TinyNet()
    older = ckpt.save_checkpoint_atomic(net, tmp_path / "resnet18-1_10.ckpt")
    newer = ckpt.save_checkpoint_atomic(net, tmp_path / "resnet18-2_20.ckpt")
    os.utime(older, ns=(1_000_000_000, 1_000_000_000))
    os.utime(newer, ns=(2_000_000_000, 2_000_000_000))
    data = newer.read_bytes()
    (tmp_path / "resnet18-3_30.ckpt").write_bytes(data[: len(data) // 2])  # truncated, newest
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    (tmp_path / f".resnet18-4_40.{os.getpid()}.partial.ckpt").write_bytes(data)
    (tmp_path / "resnet18-5_50.tmp").write_bytes(data)
    assert ckpt.latest(tmp_path) == newer


# ------------------------------------------------------------------------------------------------ reading
@pytest.fixture
def saved_checkpoint(tmp_path):
    return ckpt.save_checkpoint_atomic(TinyNet(), tmp_path / "good.ckpt", {"epoch_num": 1})


def test_load_error_missing_file(tmp_path):
    path = tmp_path / "absent.ckpt"
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(path, option="checkpoint_file_path")
    assert_one_line(error, str(path), "does not exist", "--checkpoint_file_path")


def test_load_error_directory(tmp_path):
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(tmp_path)
    assert_one_line(error, str(tmp_path), "is a directory")


def test_load_error_text_file(tmp_path):
    path = tmp_path / "readme.ckpt"
    path.write_text("net_name: resnet50\n")
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(path)
    assert_one_line(error, str(path), "not a MindSpore checkpoint", "text file")


def test_load_error_jpeg(tmp_path):
    from PIL import Image

    path = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(path)
    assert_one_line(error, str(path), "not a MindSpore checkpoint", "JPEG")


def test_load_error_empty_file(tmp_path):
    path = tmp_path / "empty.ckpt"
    path.write_bytes(b"")
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(path)
    assert_one_line(error, str(path), "empty")


def test_load_error_truncated(saved_checkpoint, tmp_path):
    data = saved_checkpoint.read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):  # what mindspore itself says: a generic parse failure
        ms.load_checkpoint(str(path))
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(path)
    assert_one_line(error, str(path), "truncated", f"ends at byte {len(data) // 2}")


def test_load_error_checkpoint_without_ckpt_suffix(saved_checkpoint, tmp_path):
    path = tmp_path / "good.ckpt.bak"
    path.write_bytes(saved_checkpoint.read_bytes())
    with pytest.raises(DropCovError) as error:
        ckpt.load_checkpoint_file(path)
    assert_one_line(error, str(path), "rename")


def test_bookkeeping_entries_are_ignored(tmp_path):
    net, optimizer, train_step = make_training()
    train_step(*batch(0))
    path = ckpt.save_checkpoint_atomic(train_step, tmp_path / "train.ckpt",
                                       {"epoch_num": 1, "global_step": 1, "step_num": 1, "config": CONFIG_TEXT,
                                        "best_metric": 0.25})
    fresh = TinyNet()
    report = ckpt.load_network_weights(fresh, ckpt.load_checkpoint_file(path), strict=True)
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
        ckpt.load_network_weights(net, ckpt.load_checkpoint_file(path), source=str(path))
    assert_one_line(error, str(path), "fc.weight: checkpoint 5x4 vs network 3x4", "fc.bias")
    for name, value in net_values(net).items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("layout_name, backbone, blocks, cov_dim", [
    ("resnet18_dropcov_1001", "resnet18", [2, 2, 2, 2], 128),
    ("resnet34_dropcov_1001", "resnet34", [3, 4, 6, 3], 128),
    ("resnet50_dropcov_1001", "resnet50", [3, 4, 6, 3], 128),
])
def test_describe_published_layouts(layout_name, backbone, blocks, cov_dim):
    description = ckpt.describe_checkpoint(layout(layout_name))
    assert description["backbone"] == backbone and description["blocks_per_layer"] == blocks
    assert description["head"] == "dropcov" and description["cov_dim"] == cov_dim
    assert description["class_num"] == 1001 and description["feature_dim"] == 8256
    assert ckpt.format_description(description) == f"{backbone} / head dropcov / cov_dim 128 / class_num 1001"


def test_describe_gap_checkpoint():
    shapes = {name: shape for name, shape in layout("resnet50_dropcov_1001").items()
              if not name.startswith(("layer_reduce", "eca_layer"))}
    shapes["fc.weight"] = (10, 2048)
    shapes["fc.bias"] = (10,)
    description = ckpt.describe_checkpoint(shapes)
    assert (description["backbone"], description["head"], description["cov_dim"], description["class_num"]) == (
        "resnet50", "gap", None, 10)


def test_error_names_the_backbone_that_fits():
    net = LayoutNet(layout("resnet18_dropcov_1001"))
    with pytest.raises(DropCovError) as error:
        ckpt.load_network_weights(net, layout("resnet50_dropcov_1001"), source="r50.ckpt")
    assert_one_line(error, "r50.ckpt does not fit", "missing (layer1.0.bn1d", "unexpected (", "more)",
                    "r50.ckpt does not fit the network: it is resnet50 / head dropcov / cov_dim 128 / class_num "
                    "1001 but the config builds resnet18", "use --net_name resnet50")


def test_error_names_the_class_count_that_fits():
    net = LayoutNet(layout("resnet18_dropcov_1001", class_num=10))
    with pytest.raises(DropCovError) as error:
        ckpt.load_network_weights(net, layout("resnet18_dropcov_1001"), source="r18.ckpt")
    assert_one_line(error, "fc.weight: checkpoint 1001x8256 vs network 10x8256", "use --class_num 1001",
                    "--pre_trained")
    assert "missing" not in str(error.value) and "--net_name" not in str(error.value)


def test_error_names_the_cov_dim_that_fits():
    net = LayoutNet(layout("resnet34_dropcov_1001"))
    with pytest.raises(DropCovError) as error:
        ckpt.load_network_weights(net, layout("resnet34_dropcov_1001", cov_dim=256), source="r34.ckpt")
    assert_one_line(error, "layer_reduce.weight: checkpoint 256x512x1x1 vs network 128x512x1x1",
                    "cov_dim 256", "use --cov_dim 256")


def test_error_spots_a_wrapper_prefix():
    net = TinyNet()
    shapes = {f"network.{p.name}": tuple(p.shape) for p in net.get_parameters()}
    with pytest.raises(DropCovError) as error:
        ckpt.load_network_weights(net, shapes)
    assert_one_line(error, "prefix 'network.'")


def test_adapt_for_finetune_drops_a_classifier_of_another_class_count(tmp_path):
    source_net = TinyNet(num_classes=5)
    path = ckpt.save_checkpoint_atomic(source_net, tmp_path / "five.ckpt")
    saved = ckpt.load_checkpoint_file(path)
    net = TinyNet(num_classes=3)
    fresh_fc = net.fc.weight.asnumpy().copy()
    adapted, dropped = ckpt.adapt_for_finetune(saved, net)
    assert sorted(dropped) == ["fc.bias", "fc.weight"] and "fc.weight" in saved
    report = ckpt.load_network_weights(net, adapted, allow_missing=dropped)
    assert "conv1.weight" in report.loaded and not report.missing
    np.testing.assert_array_equal(net.conv1.weight.asnumpy(), source_net.conv1.weight.asnumpy())
    np.testing.assert_array_equal(net.fc.weight.asnumpy(), fresh_fc)

    same, none_dropped = ckpt.adapt_for_finetune(saved, TinyNet(num_classes=5))
    assert none_dropped == [] and set(same) == set(saved)


# ------------------------------------------------------------------------------------------- resume state
def test_resume_restores_moments_and_global_step_exactly(tmp_path):
    net, optimizer, train_step = make_training(seed=0)
    for step in range(3):
        train_step(*batch(step))
    path = ckpt.save_checkpoint_atomic(train_step, tmp_path / "r.ckpt",
                                       {"epoch_num": 1, "global_step": 3, "config": CONFIG_TEXT})

    resumed_net, resumed_optimizer, resumed_step = make_training(seed=1)
    saved = ckpt.load_checkpoint_file(path)
    epoch_num, global_step = ckpt.read_resume_state(saved)
    ckpt.load_network_weights(resumed_net, saved)
    assert ckpt.restore_optimizer_state(resumed_optimizer, saved) == global_step == 3
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
        ckpt.read_resume_state(saved, source=str(path))
    assert_one_line(error, str(path), "epoch_num", "--pre_trained")
    _, optimizer, _ = make_training()
    with pytest.raises(DropCovError) as error:
        ckpt.restore_optimizer_state(optimizer, saved, source=str(path))
    assert_one_line(error, str(path), "missing (moments.conv1.weight")


def test_error_points_to_the_config_file_that_fits(tmp_path, monkeypatch):
    for name, keys in [("resnet50_imagenet2012_config.yaml", "cov_dim: 128\nclass_num: 1001"),
                       ("resnet50_torch_config.yaml", "cov_dim: 256\nclass_num: 1000"),
                       ("resnet50_other_config.yaml", "cov_dim: 256\nclass_num: 10"),
                       ("broken.yaml", "net_name: [unclosed")]:
        (tmp_path / name).write_text(f"net_name: resnet50\nhead: dropcov\n{keys}\n---\nnet_name: help text\n")
    monkeypatch.setattr(ckpt, "CONFIG_DIR", tmp_path)
    net = LayoutNet(layout("resnet18_dropcov_1001"))
    with pytest.raises(DropCovError) as error:
        ckpt.load_network_weights(net, layout("resnet50_dropcov_1001", cov_dim=256, class_num=1000))
    assert_one_line(error, "use --net_name resnet50 --cov_dim 256 --class_num 1000 "
                           "(config/resnet50_torch_config.yaml)")
    assert "--pre_trained" not in str(error.value)


def test_describe_a_real_network():
    from src.models import create_model

    description = ckpt.describe_network(create_model("resnet18", num_classes=1001))
    assert description == ckpt.describe_checkpoint(layout("resnet18_dropcov_1001"))


def test_float16_values_are_cast_to_the_network_dtype(tmp_path):
    source = TinyNet()
    half = {p.name: ms.Tensor(p.asnumpy().astype(np.float16)) for p in source.get_parameters()}
    path = ckpt.save_checkpoint_atomic(half, tmp_path / "half.ckpt", {"config": CONFIG_TEXT})
    saved = ckpt.load_checkpoint_file(path)
    assert saved["conv1.weight"].dtype == ms.float16 and saved["config"] == CONFIG_TEXT
    net = TinyNet()
    ckpt.load_network_weights(net, saved)
    assert net.conv1.weight.dtype == ms.float32
    np.testing.assert_array_equal(net.conv1.weight.asnumpy(),
                                  source.conv1.weight.asnumpy().astype(np.float16).astype(np.float32))
