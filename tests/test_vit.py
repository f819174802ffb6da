"""The DropCov transformers (src/models/vit.py and its parts): maths against NumPy, random parts by their
statistics, options, mixed precision, graph-mode training with the engine, MINDIR export."""
from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, amp
from mindspore.dataset import NumpySlicesDataset

from src.errors import DropCovError
from src.models import create_model
from src.models.conv_tokens import DenseTokenStem, token_grid
from src.models.cross_covariance import cross_covariance, split_query_key, token_keep_mask
from src.models.layers import DropPath
from src.models.mgcrp_head import MGCrPHead
from src.models.vit import drop_path_rates, sinusoid_table

#: A small network of the same kind for CPU tests: 48 wide, 2 blocks of 3 heads, a 2 x 8 DropCov head.
TINY = {"embed_dim": 48, "depth": 2, "num_heads": 3, "mlp_ratio": 2.0, "wr_heads": 2, "wr_dim": 8}


def _array(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------------------------------ maths
def test_split_query_key_reads_the_authors_layout():
    batch, tokens, heads, width = 2, 5, 3, 4
    projected = _array((batch, tokens, 3 * heads * width))
    q, k = split_query_key(Tensor(projected), heads, width)
    # the authors: reshape(B, N, 3, h, w).permute(2, 0, 3, 1, 4), then reshape(B h, N, w)
    chunks = projected.reshape(batch, tokens, 3, heads, width).transpose(2, 0, 3, 1, 4)
    np.testing.assert_array_equal(q.asnumpy(), chunks[0].reshape(batch * heads, tokens, width))
    np.testing.assert_array_equal(k.asnumpy(), chunks[1].reshape(batch * heads, tokens, width))


def test_cross_covariance_removes_one_scalar_mean_per_head():
    q, k = _array((4, 7, 3), seed=1) + 2.0, _array((4, 7, 3), seed=2) - 1.0
    got = cross_covariance(Tensor(q.astype(np.float16)), Tensor(k.astype(np.float16))).asnumpy()
    assert got.dtype == np.float32 and got.shape == (4, 3, 3)
    q64, k64 = q.astype(np.float16).astype(np.float64), k.astype(np.float16).astype(np.float64)
    qc = q64 - q64.mean(axis=(1, 2), keepdims=True)
    kc = k64 - k64.mean(axis=(1, 2), keepdims=True)
    expected = np.einsum("ina,inb->iab", qc, kc) / 7
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    per_column = np.einsum("ina,inb->iab", q64 - q64.mean(1, keepdims=True), k64 - k64.mean(1, keepdims=True)) / 7
    assert not np.allclose(got, per_column, atol=1e-2)  # not the usual per-column covariance


def test_token_keep_mask_drops_whole_tokens_at_the_rate():
    ms.set_seed(4)
    mask = token_keep_mask(64, 196, 0.2).asnumpy()
    assert mask.shape == (64, 196, 1) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, np.float32(1.25)}
    dropped = float((mask == 0).mean())
    assert abs(dropped - 0.2) < 0.01, dropped  # 12,544 draws: 4 standard deviations ~ 0.014
    ms.set_seed(4)
    np.testing.assert_array_equal(token_keep_mask(64, 196, 0.2).asnumpy(), mask)


def test_drop_path_zeroes_whole_samples_and_is_identity_in_evaluation():
    cell = DropPath(0.3)
    x = Tensor(np.ones((4000, 3, 5), np.float32))
    np.testing.assert_array_equal(cell(x).asnumpy(), x.asnumpy())
    cell.set_train(True)
    ms.set_seed(5)
    out = cell(x).asnumpy()
    per_sample = out.reshape(4000, -1)
    assert np.all(per_sample == per_sample[:, :1])  # one draw per sample
    assert set(np.unique(per_sample)) <= {0.0, np.float32(1 / 0.7)}
    assert abs(float((per_sample[:, 0] == 0).mean()) - 0.3) < 0.03
    with pytest.raises(ValueError, match="drop path rate"):
        DropPath(1.0)
    assert drop_path_rates(0.1, 12) == pytest.approx(list(np.linspace(0, 0.1, 12)))
    assert drop_path_rates(0.1, 1) == [0.0]


def test_sinusoid_table_formula():
    table = sinusoid_table(197, 384)[0]
    position, column = 17, np.arange(384)
    angle = position / np.power(10000.0, 2 * (column // 2) / 384)
    np.testing.assert_allclose(table[position, 0::2], np.sin(angle[0::2]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(table[position, 1::2], np.cos(angle[1::2]), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(table[0, 1::2], 1.0)


@pytest.mark.parametrize("image_size, grid", [(224, 14), (112, 14), (64, 4), (32, 2), (80, 5)])
def test_token_grid_is_the_stem_output(image_size, grid):
    assert token_grid(image_size) == grid
    stem = DenseTokenStem(image_size, embed_dim=8)
    assert stem(Tensor(_array((1, 3, image_size, image_size)))).shape == (1, grid * grid, 8)


# ------------------------------------------------------------------------------------- the network
@pytest.mark.slow
def test_registered_networks_shapes_and_heads():
    net = create_model("deit_small_dropcov", num_classes=7, image_size=64, **TINY)
    x = Tensor(_array((2, 3, 64, 64)))
    tokens = net.forward_features(x)
    assert tokens.shape == (2, 17, 48)
    assert net.forward_head(tokens).shape == (2, 7)
    names = {p.name for p in net.get_parameters()}
    assert {"cls_token", "classifier.representation.wr.weight", "classifier.visual_fc.weight",
            "classifier.cls_fc.bias", "blocks.1.attn.qkv.weight", "norm.gamma"} <= names
    assert net.classifier.representation.wr.weight.shape == (3 * 2 * 8, 48)
    baseline = create_model("t2t_vit_14_cls", num_classes=7, image_size=64, **TINY)
    assert not any(name.startswith("classifier.") and "cls_fc" not in name
                   for name in (p.name for p in baseline.get_parameters()))
    assert baseline(x).shape == (2, 7)


@pytest.mark.parametrize("name, options, match", [
    ("deit_small_dropcov", {"head": "gap"}, r"deit_small_dropcov takes no option head"),
    ("deit_small_dropcov", {"cov_dim": 256}, r"takes no option cov_dim"),
    ("deit_small_dropcov", {"patch_size": 16}, r"takes no option patch_size"),
    ("deit_small_cls", {"token_drop": 0.1}, r"deit_small_cls takes no option token_drop"),
    ("t2t_vit_14_dropcov", {"drop_path_rate": 1.5}, r"drop_path_rate=1.5"),
    ("t2t_vit_14_dropcov", {"num_heads": 5}, r"embed_dim=384 is not divisible by num_heads=5"),
    ("t2t_vit_14_dropcov", {"image_size": 16}, r"image_size=16"),
    ("resnet18", {"drop_path_rate": 0.1}, r"resnet18 takes no option drop_path_rate"),
])
def test_bad_options_are_named(name, options, match):
    with pytest.raises(DropCovError, match=match):
        create_model(name, **options)


def test_eval_is_deterministic_and_training_is_random():
    ms.set_seed(6)
    head = MGCrPHead(embed_dim=16, num_classes=3, num_heads=2, head_dim=4)
    x = Tensor(_array((2, 10, 16), seed=7))
    np.testing.assert_array_equal(head(x).asnumpy(), head(x).asnumpy())
    head.set_train(True)
    assert not np.allclose(head(x).asnumpy(), head(x).asnumpy())


def test_cross_covariance_stays_float32_under_amp_o3():
    ms.set_seed(8)
    net = amp.auto_mixed_precision(create_model("deit_small_dropcov", num_classes=5, image_size=32, **TINY), "O3")
    big = Tensor((np.random.default_rng(9).random((2, 4, 48)) * 3000).astype(np.float16))  # fp16 q^T k overflows
    network = net._backbone if hasattr(net, "_backbone") else net
    vector = network.classifier.representation(big).asnumpy()
    assert vector.dtype == np.float32 and np.isfinite(vector).all()
    logits = net(Tensor(_array((2, 3, 32, 32)))).asnumpy()
    assert logits.shape == (2, 5) and np.isfinite(logits).all()


# ------------------------------------------------------------------ graph mode: engine and export
@pytest.mark.slow
def test_tiny_network_trains_with_the_engine_in_graph_mode(tmp_path):
    """Engine's train step (label-smoothed CE, Momentum with weight-decay groups) and the loop: the loss falls."""
    from src.engine.loss import create_loss
    from src.engine.lr_schedule import create_lr_schedule
    from src.engine.metrics import MetricsWriter, latest_per_epoch, read_metrics
    from src.engine.optimizer import create_loss_scale_manager, create_optimizer, optimizer_loss_scale
    from src.engine.train_settings import TrainSettings
    from src.engine.train_step import build_train_step
    from src.engine.trainer import Trainer

    assert ms.get_context("mode") == ms.GRAPH_MODE
    ms.set_seed(10)
    net = create_model("deit_small_dropcov", num_classes=4, image_size=32, drop_path_rate=0.1, **TINY)
    rng = np.random.default_rng(11)
    images = np.repeat(rng.standard_normal((4, 3, 32, 32)).astype(np.float32), 2, axis=0)
    labels = np.repeat(np.arange(4, dtype=np.int32), 2)

    class Bundle:
        dataset = NumpySlicesDataset((images, labels), column_names=["image", "label"], shuffle=False).batch(8)
        num_images, steps_per_epoch = 8, 1

    steps = 20  # a transformer starts slowly with SGD: 4 warm-up steps to 0.2, cosine decay
    schedule = create_lr_schedule("cosine", 0.0, 0.2, 0.0, 4, steps, 1)
    optimizer = create_optimizer(net, "Momentum", schedule, 0.9, 1e-4, optimizer_loss_scale("fixed", 1.0))
    train_step = build_train_step(net, create_loss(4, 0.1), optimizer, "O0", create_loss_scale_manager("fixed", 1.0))
    settings = TrainSettings(epochs=steps, steps_per_epoch=1, batch_size=8, log_interval=1, save_checkpoint=False)
    Trainer(train_step, net, settings, schedule, metrics=MetricsWriter(tmp_path / "m.jsonl")).fit(Bundle)
    losses = [record["loss"] for record in latest_per_epoch(read_metrics(tmp_path / "m.jsonl"), "epoch")]
    assert len(losses) == steps and np.isfinite(losses).all()
    assert min(losses[-3:]) < 0.8 * losses[0], losses


@pytest.mark.slow
def test_export_mindir_gives_the_same_logits(tmp_path):
    from src.engine.export import export_network, load_exported

    ms.set_seed(12)
    net = create_model("t2t_vit_14_dropcov", num_classes=6, image_size=32, **TINY)
    net.set_train(False)
    x = Tensor(_array((2, 3, 32, 32), seed=13))
    expected = net(x).asnumpy()
    path = export_network(net, tmp_path / "vit", "MINDIR", image_size=32, batch_size=2)
    np.testing.assert_allclose(load_exported(path)(x).asnumpy(), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ model info
@pytest.mark.parametrize("name, options", [
    ("deit_small_dropcov", {"num_classes": 10, "image_size": 112, "depth": 2}),
    ("t2t_vit_14_cls", {"num_classes": 7, "image_size": 64, **TINY}),
    ("t2t_vit_14_dropcov", {"num_classes": 1000, "image_size": 80, "wr_dim": 12, "drop_path_rate": 0.1}),
])
def test_analytic_parameter_count_equals_the_built_network(name, options):
    from src.models.info import describe_model

    network = create_model(name, **options)
    assert describe_model(name, **options)["params"] == sum(int(np.prod(p.shape)) for p in network.trainable_params())


def test_readme_rows_are_reproduced():
    """Parameters 25.6 / 25.0 M (README 24.9) and, without the attention products as thop counts, 5.5 / 5.4 G."""
    from src.tools.model_info import vit_table_rows

    rows = {info["net_name"]: info for info, _ in vit_table_rows()}
    assert rows["deit_small_dropcov"]["params"] == 25_586_576  # PyTorch reference: trainable parameters
    assert rows["t2t_vit_14_dropcov"]["params"] == 24_999_056
    assert round(rows["deit_small_dropcov"]["gmacs_without_attention"], 1) == 5.5
    assert round(rows["t2t_vit_14_dropcov"]["gmacs_without_attention"], 1) == 5.4
    assert rows["deit_small_dropcov"]["attention_macs"] == 12 * 2 * 197 * 197 * 384


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deit_small_dropcov", "t2t_vit_14_cls"])
def test_analytic_macs_equal_pytorch_flop_counter(name):
    """torch.utils.flop_counter on the PyTorch reference counts every conv, linear and matrix product:
    half its FLOPs equal our MACs, plus the unused third of ``wr`` that the authors' network multiplies."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from src.models.info import describe_model
    from torch_reference.vit import build_reference

    dropcov = name.endswith("_dropcov")
    reference = build_reference(name.removesuffix("_dropcov").removesuffix("_cls"), representation=dropcov).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        reference(torch.zeros(1, 3, 224, 224))
    unused_third = 196 * 384 * 6 * 24 if dropcov else 0
    assert counter.get_total_flops() // 2 == describe_model(name, num_classes=1000)["macs"] + unused_third


@pytest.mark.slow
def test_onednn_convolutions_give_the_same_logits():
    """conv_backend onednn (train.py's default on CPU) swaps the stem's bias-free convolutions and its
    padded max-pool (whose input, unlike the ResNets', can be negative): same logits as MindSpore's."""
    from src.kernels import build
    from src.kernels.swap import apply_conv_backend

    build.build_library()
    ms.set_seed(14)
    stock = create_model("deit_small_dropcov", num_classes=5, image_size=64, **TINY)
    onednn = create_model("deit_small_dropcov", num_classes=5, image_size=64, **TINY)
    ms.load_param_into_net(onednn, {p.name: ms.Parameter(p.data.copy(), name=p.name) for p in stock.get_parameters()})
    assert apply_conv_backend(onednn, "onednn", "CPU", "O0") == "onednn"
    swapped = {type(cell).__name__ for _, cell in onednn.cells_and_names()}
    assert {"OneDNNConv2d", "OneDNNMaxPool2d"} <= swapped
    x = Tensor(_array((2, 3, 64, 64), seed=15))
    np.testing.assert_allclose(onednn(x).asnumpy(), stock(x).asnumpy(), rtol=1e-5, atol=1e-6)
