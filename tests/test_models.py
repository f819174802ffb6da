"""Networks of src/models: registry, heads, gradients, mixed precision and a few training steps."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, amp, nn

from src.errors import DropCovError
from src.models import DropCovHead, create_model, list_models
from src.models.dropcov_head import batch_norm
from src.models.info import describe_model
from src.models.specs import validate_model_options
from src.tools import model_info
from src.tools.model_info import paper_table_rows


def _features(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


class _WeightedSum(nn.Cell):
    """Scalar loss sum(head(x) * w) so a gradient is a plain array."""

    def __init__(self, head, weights):
        super().__init__()
        self.head = head
        self.weights = Tensor(weights)

    def construct(self, x):
        return (self.head(x) * self.weights).sum()


def _central_differences(fn, x: np.ndarray, step: float) -> np.ndarray:
    grad = np.zeros_like(x, dtype=np.float64)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        grad[index] = (float(fn(Tensor(plus)).asnumpy()) - float(fn(Tensor(minus)).asnumpy())) / (2 * step)
    return grad


@pytest.mark.parametrize("post_norm,train", [("none", False), ("isqrt", False), ("isqrt", True)])
def test_head_gradient_matches_central_differences(post_norm, train):
    ms.set_seed(1)
    head = DropCovHead(in_channels=4, num_classes=3, cov_dim=3, post_norm=post_norm, isqrt_iters=5,
                       adaptive_dropout=False)
    head.fc.weight.set_data(Tensor(_features((3, 6), seed=9)))  # O(1) logits: float32 differences resolve
    x = _features((2, 4, 3, 3), seed=2) + 0.5
    loss = _WeightedSum(head, _features((2, 3), seed=3))
    loss.set_train(train)  # train: BatchNorm on batch statistics, adaptive dropout off (deterministic)
    analytic = ms.grad(loss)(Tensor(x)).asnumpy()
    # the step stays below the smallest |ReLU input| (about 3e-3 here) so no kink is crossed
    numeric = _central_differences(loss, x, step=1e-3)
    error = np.linalg.norm(analytic - numeric) / np.linalg.norm(numeric)
    assert error < 1e-2, error


def test_eval_output_ignores_adaptive_dropout_and_train_output_is_random():
    x = Tensor(_features((4, 8, 4, 4), seed=4) + 1.0)
    ms.set_seed(2)
    with_dropout = DropCovHead(8, 5, cov_dim=16, adaptive_dropout=True)
    ms.set_seed(2)
    without = DropCovHead(8, 5, cov_dim=16, adaptive_dropout=False)
    np.testing.assert_array_equal(with_dropout(x).asnumpy(), without(x).asnumpy())
    np.testing.assert_array_equal(with_dropout(x).asnumpy(), with_dropout(x).asnumpy())
    # training re-weights the features (X' = X*y + X): the logits differ from the dropout-free head
    with_dropout.set_train(True)
    without.set_train(True)
    assert not np.allclose(with_dropout(x).asnumpy(), without(x).asnumpy())


def test_representation_stays_float32_under_amp_o3():
    ms.set_seed(3)
    net = create_model("resnet18", num_classes=10)
    net = amp.auto_mixed_precision(net, "O3")
    head = net._backbone.head if hasattr(net, "_backbone") else net.head
    big = (np.random.default_rng(5).random((2, 128, 4, 4)) * 2000).astype(np.float16)  # fp16 would overflow
    vector = head.representation(Tensor(big)).asnumpy()
    assert vector.dtype == np.float32 and np.isfinite(vector).all()
    flat = big.astype(np.float64).reshape(2, 128, 16)
    centred = flat - flat.mean(axis=2, keepdims=True)
    sigma = centred @ centred.transpose(0, 2, 1) / 16
    rows, cols = np.triu_indices(128)
    np.testing.assert_allclose(vector, sigma[:, rows, cols], rtol=1e-4, atol=1e-2)
    logits = net(Tensor(_features((2, 3, 32, 32)))).asnumpy()
    assert logits.shape == (2, 10) and np.isfinite(logits).all()


def test_forward_features_and_head_shapes():
    net = create_model("resnet18", num_classes=7, cov_dim=16)
    x = Tensor(_features((2, 3, 64, 64)))
    features = net.forward_features(x)
    assert features.shape == (2, 512, 4, 4)  # layer4 stride 1: 64 / 16
    assert net.forward_head(features).shape == (2, 7)
    gap = create_model("resnet18", num_classes=7, head="gap")
    assert gap.forward_features(x).shape == (2, 512, 2, 2)  # layer4 stride 2: 64 / 32
    assert gap(x).shape == (2, 7)


def _momentum(cell: nn.BatchNorm2d) -> float:
    """The constructor's momentum: nn.BatchNorm2d keeps ``1 - momentum`` for its kernel."""
    return 1.0 - cell.momentum


def test_batch_norm_momentum_follows_the_mindspore_convention():
    bn = batch_norm(3, eps=1e-5, momentum=0.9)
    bn.set_train(True)
    x = _features((4, 3, 2, 2), seed=6) + 2.0
    bn(Tensor(x))
    np.testing.assert_allclose(bn.moving_mean.asnumpy(), 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-5)


def test_torch_style_uses_symmetric_padding_and_pytorch_batchnorm():
    net = create_model("resnet50", num_classes=10, cov_dim=16, arch_style="torch")
    cells = dict(net.cells_and_names())
    conv2 = cells["backbone.layer2.0.conv2"]
    assert conv2.pad_mode == "pad" and conv2.padding == 1 and conv2.stride == (2, 2)
    for name in ("backbone.bn1", "backbone.layer1.0.bn3", "backbone.layer2.0.down_sample_layer.1",
                 "head.layer_reduce_bn"):
        assert cells[name].eps == pytest.approx(1e-5) and _momentum(cells[name]) == pytest.approx(0.9)
    native = dict(create_model("resnet50", num_classes=10, cov_dim=16).cells_and_names())
    assert native["backbone.layer2.0.conv2"].pad_mode == "same"
    assert native["head.layer_reduce_bn"].eps == pytest.approx(1e-4)
    r18 = dict(create_model("resnet18", num_classes=10, cov_dim=16).cells_and_names())
    assert r18["backbone.bn1"].eps == pytest.approx(1e-5) and _momentum(r18["backbone.bn1"]) == pytest.approx(0.1)
    assert r18["backbone.layer1.0.bn1d"].eps == pytest.approx(1e-4)
    logits = net(Tensor(_features((1, 3, 64, 64)))).asnumpy()
    assert logits.shape == (1, 10) and np.isfinite(logits).all()


def test_unknown_model_name_lists_the_valid_ones():
    assert list_models() == ["deit_small_cls", "deit_small_dropcov", "resnet101", "resnet152", "resnet18",
                             "resnet34", "resnet50", "t2t_vit_14_cls", "t2t_vit_14_dropcov"]
    with pytest.raises(DropCovError, match=r"resnet5.*did you mean 'resnet50'.*resnet101, resnet152"):
        create_model("resnet5")


@pytest.mark.parametrize("options,match", [
    ({"head": "gpa"}, r"head='gpa'.*did you mean 'gap'.*dropcov, gap"),
    ({"post_norm": "sqrt"}, r"post_norm='sqrt'.*none, isqrt"),
    ({"arch_style": "pytorch"}, r"arch_style='pytorch'.*mindspore, torch"),
    ({"layer4_stride": 3}, r"layer4_stride=3"),
    ({"cov_dim": 0}, r"cov_dim=0"),
    ({"num_classes": -1}, r"num_classes=-1"),
    ({"adaptive_dropout": "yes"}, r"adaptive_dropout='yes'"),
])
def test_bad_model_options_are_named(options, match):
    with pytest.raises(DropCovError, match=match):
        validate_model_options(**options)


def _train_losses(head: str, post_norm: str, steps: int = 8) -> list:
    ms.set_seed(7)
    net = create_model("resnet18", num_classes=4, head=head, cov_dim=16, post_norm=post_norm)
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    optimizer = nn.Momentum(net.trainable_params(), learning_rate=0.02, momentum=0.9)
    train_step = nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn), optimizer)
    train_step.set_train(True)
    rng = np.random.default_rng(8)
    images = Tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    labels = Tensor(np.array([0, 1, 2, 3], np.int32))
    return [float(train_step(images, labels).asnumpy()) for _ in range(steps)]


@pytest.mark.parametrize("head,post_norm", [("dropcov", "none"), ("dropcov", "isqrt"), ("gap", "none")])
def test_a_few_graph_mode_training_steps_lower_the_loss(head, post_norm):
    losses = _train_losses(head, post_norm)
    assert np.isfinite(losses).all()
    assert min(losses[-3:]) < losses[0] * 0.85, losses


# --- model info (src/models/info.py, src/tools/model_info.py) ---

def _trainable_count(net) -> int:
    return sum(int(np.prod(p.shape)) for p in net.trainable_params())


@pytest.mark.parametrize("name,options", [
    ("resnet18", {"num_classes": 10, "cov_dim": 16, "post_norm": "isqrt"}),
    ("resnet34", {"num_classes": 1001}),
    ("resnet50", {"num_classes": 1000, "head": "gap"}),
    ("resnet50", {"num_classes": 1000, "cov_dim": 256, "arch_style": "torch"}),
    ("resnet101", {"num_classes": 1000, "cov_dim": 128, "arch_style": "torch"}),
])
def test_analytic_parameter_count_equals_the_built_network(name, options):
    assert describe_model(name, **options)["params"] == _trainable_count(create_model(name, **options))


def test_paper_table_parameters_and_the_resnet18_34_gap_flops_are_reproduced():
    rows = {(info["net_name"], info["head"]): info for info, _ in paper_table_rows()}
    assert len(rows) == 6
    params_ranges = {("resnet18", "gap"): (11.7,), ("resnet34", "gap"): (21.8,), ("resnet50", "gap"): (25.6,),
                     ("resnet18", "dropcov"): (19.5, 19.6), ("resnet34", "dropcov"): (29.6, 29.7),
                     ("resnet50", "dropcov"): (32.0,)}
    for key, allowed in params_ranges.items():
        assert round(rows[key]["params_m"], 1) in allowed, (key, rows[key]["params_m"])
    assert rows["resnet18", "dropcov"]["params"] + 8257 == 19_507_564  # the 1001-class layout file's total
    assert round(rows["resnet18", "gap"]["gmacs"], 2) == 1.81
    assert round(rows["resnet34", "gap"]["gmacs"], 2) == 3.66


def test_flops_of_resnet18_dropcov_by_hand():
    # stem, 4 stages (layer4 stride 1: 14x14), 1x1 reduction, covariance N*d*d, fc on the triangle
    stem = 112 * 112 * 64 * 3 * 49
    layer1 = 4 * 56 * 56 * 64 * 64 * 9
    def stage(size, cin, cout):
        return size * size * cout * (cin * 9 + cout * 9 + 2 * cout * 9 + cin)
    backbone = stem + layer1 + stage(28, 64, 128) + stage(14, 128, 256) + stage(14, 256, 512)
    head = 196 * 512 * 128 + 196 * 128 * 128 + 8256 * 1000
    assert describe_model("resnet18")["macs"] == backbone + head
    isqrt_extra = 12 * 128 ** 3  # 5 Newton-Schulz iterations: 3*5-3 products of 128x128 matrices
    assert describe_model("resnet18", post_norm="isqrt")["macs"] == backbone + head + isqrt_extra
    assert describe_model("resnet18", image_size=448)["feature_size"] == 28


def test_model_info_command_prints_a_row_and_the_table(capsys):
    assert model_info.main(["--net_name", "resnet50", "--head", "gap"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].split()[:2] == ["resnet50", "gap"]
    assert lines[1].split()[-2:] == ["25.56", "4.09"]
    assert model_info.main(["--table"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 7 + 3 + 6 + 3 + 2 and table[2].split()[:2] == ["resnet18", "dropcov"]
    torch_rows = {(row.split()[0], int(row.split()[2])): row.split() for row in table[10:16]}
    assert torch_rows["resnet101", 128][6:9] == ["51.02", "9.98", "51.0"]  # the published 51.0 M: a 128-d head
    assert torch_rows["resnet101", 256][6] == "75.92"
    assert [torch_rows[name, 128][6] for name in ("resnet34", "resnet50")] == ["29.61", "32.03"]
    assert table[19].split()[:2] == ["deit_small_dropcov", "dropcov"]
    assert model_info.main(["--net_name", "resnet5"]) == 2
    assert "did you mean 'resnet50'" in capsys.readouterr().err


def test_basic_stem_pool_equals_zero_pad_then_valid_pool():
    """The R18/34 stem pools with padding 1 inside MaxPool2d; on post-ReLU input that equals the
    original network's explicit zero pad followed by a 'valid' 3x3/2 max-pool (checked with numpy)."""
    net = create_model("resnet18", num_classes=10)
    pool = next(cell for name, cell in net.cells_and_names() if name.endswith("maxpool"))
    x = np.maximum(np.random.default_rng(0).standard_normal((2, 64, 9, 9)), 0).astype(np.float32)
    got = pool(Tensor(x)).asnumpy()
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = (padded.shape[2] - 3) // 2 + 1
    windows = np.stack([padded[:, :, i:i + 2 * out - 1:2, j:j + 2 * out - 1:2]
                        for i in range(3) for j in range(3)])
    np.testing.assert_array_equal(got, windows.max(axis=0))


def test_conv_and_dense_init_options_redraw_weights():
    """conv_init/dense_init are real options: HeNormal(fan_out) and Normal(0.01) draws have their spread."""
    ms.set_seed(3)
    net = create_model("resnet18", num_classes=10, conv_init="HeNormal", dense_init="Normal")
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    conv = params["layer3.0.conv2.weight"]  # 256x256x3x3: fan_out = 256*9
    np.testing.assert_allclose(conv.std(), np.sqrt(2.0 / (256 * 9)), rtol=0.05)
    np.testing.assert_allclose(params["fc.weight"].std(), 0.01, rtol=0.05)
    assert not params["fc.bias"].any()
    default = {p.name: p.asnumpy() for p in create_model("resnet18", num_classes=10).get_parameters()}
    xavier_bound = np.sqrt(6.0 / (256 * 9 + 256 * 9))  # XavierUniform(gain 1)
    assert np.abs(default["layer3.0.conv2.weight"]).max() <= xavier_bound
    with pytest.raises(DropCovError, match="unknown conv_init='Kaiming'"):
        create_model("resnet18", conv_init="Kaiming")


def test_a_dropcov_head_on_a_one_by_one_map_is_refused():
    """ResNet + DropCov keeps layer4 at stride 1, so the map is the input / 16: a 16x16 image leaves 1x1,
    whose covariance is zero for every image; 24 leaves 2x2 (usable); GAP has no such limit."""
    from src.models.info import check_network_fits

    with pytest.raises(DropCovError, match=r"an image size of 16 leaves a 1x1 map after resnet18's last stage"):
        check_network_fits("resnet18", {"num_classes": 10, "head": "dropcov"}, (224, 16), memory_bytes=2**40)
    check_network_fits("resnet18", {"num_classes": 10, "head": "dropcov"}, (24,), memory_bytes=2**40)
    check_network_fits("resnet18", {"num_classes": 10, "head": "gap"}, (16,), memory_bytes=2**40)


def test_the_memory_check_counts_parameters_and_covariance_buffers():
    """A cov_dim of 4000 (a 4000 x 4000 covariance per image, 8 M-d classifier input) cannot train on 1 GiB;
    the 128-d head can, and so can cov_dim 4000 with one image per step when memory is larger."""
    from src.models.info import check_network_fits

    options = {"num_classes": 10, "head": "dropcov", "cov_dim": 4000}
    with pytest.raises(DropCovError, match=r"needs about \d+ GiB to train, .*of this machine's 1 GiB.*cov_dim=4000"):
        check_network_fits("resnet18", options, (32,), batch_size=64, memory_bytes=2**30)
    check_network_fits("resnet18", {"num_classes": 10, "head": "dropcov"}, (32,), batch_size=64, memory_bytes=2**30)
    params = describe_model("resnet18", image_size=32, **options)["params"]
    needed = params * 16 + 1 * 6 * 4 * 4000**2
    check_network_fits("resnet18", options, (32,), batch_size=1, memory_bytes=int(needed / 0.8) + 1)
    with pytest.raises(DropCovError, match="cov_dim=4000"):
        check_network_fits("resnet18", options, (32,), batch_size=1, memory_bytes=int(needed / 0.8) - 2**20)
