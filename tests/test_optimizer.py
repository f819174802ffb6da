"""Weight-decay groups, AdamW against numpy, loss-scale agreement, the learning rate at a restored global step,
and the update the original MindSpore code applied (the ImageNet configs reproduce it)."""
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from src.engine.lr_schedule import create_lr_schedule
from src.engine.optimizer import (
    OPTIMIZER_NAMES,
    create_loss_scale_manager,
    create_optimizer,
    optimizer_loss_scale,
    weight_decay_groups,
)
from src.engine.resume import set_global_step
from src.errors import DropCovError


class SmallNet(nn.Cell):
    """Names as in the checkpoint layout: conv without bias, BN, a 1-channel ECA conv, dense with bias."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, has_bias=False, weight_init="xavier_uniform")
        self.bn1 = nn.BatchNorm2d(4)
        self.eca_layer = nn.Conv1d(1, 1, 3, has_bias=False)
        self.fc = nn.Dense(4, 3)

    def construct(self, x):
        return self.fc(self.bn1(self.conv1(x)).mean((2, 3)))


DECAYED = {"conv1.weight", "eca_layer.weight", "fc.weight"}
NOT_DECAYED = {"bn1.gamma", "bn1.beta", "fc.bias"}


def test_groups_by_name():
    net = SmallNet()
    decayed, not_decayed = weight_decay_groups(net.get_parameters())
    assert {p.name for p in decayed} == DECAYED
    assert {p.name for p in not_decayed} == NOT_DECAYED  # moving statistics are in neither


def test_optimizer_applies_decay_to_the_decayed_group_only():
    net = SmallNet()
    optimizer = create_optimizer(net, "Momentum", 0.1, 0.9, weight_decay=1e-4)
    decay_of = {p.name: wd for p, wd in zip(optimizer.parameters, optimizer.group_weight_decay)}
    assert decay_of == {**{name: 1e-4 for name in DECAYED}, **{name: 0.0 for name in NOT_DECAYED}}
    assert [p.name for p in optimizer.parameters] == [p.name for p in net.trainable_params()]  # order kept


def test_unknown_optimizer_lists_supported_ones():
    with pytest.raises(DropCovError, match="'Adam'.*Momentum"):
        create_optimizer(SmallNet(), "Adam", 0.1)


def test_fixed_loss_scale_agrees_between_manager_and_optimizer():
    manager = create_loss_scale_manager("fixed", 1024)
    assert isinstance(manager, ms.amp.FixedLossScaleManager)
    assert manager.get_loss_scale() == 1024 and manager.get_drop_overflow_update() is False
    optimizer = create_optimizer(SmallNet(), lr=0.1, loss_scale=optimizer_loss_scale("fixed", 1024))
    assert optimizer.loss_scale == manager.get_loss_scale()


def test_dynamic_loss_scale_leaves_the_optimizer_unscaled():
    manager = create_loss_scale_manager("dynamic", 1024)
    assert isinstance(manager, ms.amp.DynamicLossScaleManager)
    assert manager.get_loss_scale() == 1024
    assert optimizer_loss_scale("dynamic", 1024) == 1.0


@pytest.mark.parametrize("kind, scale", [("static", 1024), ("fixed", 0), ("dynamic", 0.5)])
def test_invalid_loss_scale(kind, scale):
    with pytest.raises(DropCovError, match="loss_scale"):
        create_loss_scale_manager(kind, scale)


def _one_step_update(global_step, schedule):
    """Weight change of fc.weight after one Momentum step (zero moments, no decay) at ``global_step``."""
    ms.set_seed(0)
    net = SmallNet()
    optimizer = create_optimizer(net, "Momentum", schedule, momentum=0.9, weight_decay=0.0)
    set_global_step(optimizer, global_step)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True,
                                                                                        reduction="mean")),
                               optimizer)
    step.set_train()
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.normal(size=(2, 3, 6, 6)).astype(np.float32))
    y = ms.Tensor(np.array([0, 2], dtype=np.int32))
    before = net.fc.weight.asnumpy().copy()
    step(x, y)
    assert int(optimizer.global_step.asnumpy()[0]) == global_step + 1
    return net.fc.weight.asnumpy() - before


def test_optimizer_uses_the_lr_of_a_restored_global_step():
    schedule = create_lr_schedule("multistep", 0.0, 0.1, 0.0, 0, 4, 3, milestones=(2,), gamma=0.1)
    at_start = _one_step_update(0, schedule)
    after_milestone = _one_step_update(7, schedule)  # epoch 2: lr 0.01
    assert np.abs(at_start).max() > 0
    np.testing.assert_allclose(after_milestone, at_start * 0.1, rtol=1e-3, atol=1e-7)  # float32 w - w0


# ---------------------------------------------------------------- the update of the published checkpoints

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
ORIGINAL_RECIPE_CONFIGS = sorted(path.name for path in CONFIG_DIR.glob("resnet*_imagenet2012_config.yaml"))
ORIGINAL_STEP = {"lr": 0.12, "weight_decay": 1e-4, "momentum": 0.9, "manager_scale": 1024.0, "optimizer_scale": 512.0}
"""The original MindSpore code's train.py: lr 0.12 (epochs 0-29), decay 1e-4 on the decayed group,
``nn.Momentum(group_params, lr, 0.9, loss_scale=512)`` under ``FixedLossScaleManager(1024, drop_overflow_update=False)``."""


def mse_gradients(weight, bias, x, y):
    """d/d(weight, bias) of mean((x W^T + b - y)^2) over all N x K entries, in float64."""
    residual = x @ weight.T + bias - y
    d_out = 2.0 * residual / residual.size
    return d_out.T @ x, d_out.sum(axis=0)


def original_momentum_steps(weight, bias, x, y, steps):
    """The original code's steps in numpy, following MindSpore's Optimizer/Momentum sources:

    the train cell back-propagates the loss times the manager's scale S (``TrainOneStepCell(sens=S)``);
    ``decay_weight`` adds ``(weight_decay * s) * w`` (the optimizer multiplies the decay by its own scale s,
    ``_preprocess_weight_decay``); ``scale_grad`` multiplies by 1/s; ``ApplyMomentum``: v = m v + g', w -= lr v.
    The bias is in the group without decay.
    """
    scale, own_scale = ORIGINAL_STEP["manager_scale"], ORIGINAL_STEP["optimizer_scale"]
    decay, lr, momentum = ORIGINAL_STEP["weight_decay"], ORIGINAL_STEP["lr"], ORIGINAL_STEP["momentum"]
    weight, bias = weight.astype(np.float64), bias.astype(np.float64)
    v_weight, v_bias = np.zeros_like(weight), np.zeros_like(bias)
    for _ in range(steps):
        g_weight, g_bias = mse_gradients(weight, bias, x, y)
        g_weight = (scale * g_weight + (decay * own_scale) * weight) / own_scale
        g_bias = (scale * g_bias) / own_scale
        v_weight, v_bias = momentum * v_weight + g_weight, momentum * v_bias + g_bias
        weight, bias = weight - lr * v_weight, bias - lr * v_bias
    return weight, bias


@pytest.mark.parametrize("config_name", ORIGINAL_RECIPE_CONFIGS)
def test_config_step_equals_the_original_codes_step(config_name):
    """Three steps of our optimizer and train cell with the config's lr_max, weight_decay and loss scale give
    the weights of the original code's steps (2 g + 1e-4 w per step at lr 0.12) to 1e-6."""
    from src.config import load_config
    from src.engine.train_step import build_train_step

    config, _ = load_config(["--config_path", str(CONFIG_DIR / config_name)])
    assert (config.lr_max, config.weight_decay) == (0.24, 5e-5)
    assert (config.loss_scale, config.loss_scale_type, config.momentum) == (1024.0, "fixed", 0.9)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 5)).astype(np.float32)
    y = rng.normal(size=(8, 3)).astype(np.float32)
    weight0 = rng.normal(scale=0.5, size=(3, 5)).astype(np.float32)
    bias0 = rng.normal(scale=0.5, size=(3,)).astype(np.float32)
    net = nn.Dense(5, 3, weight_init=ms.Tensor(weight0), bias_init=ms.Tensor(bias0))
    schedule = create_lr_schedule(config.lr_decay_mode, config.lr_init, config.lr_max, config.lr_end,
                                  config.warmup_epochs, config.epoch_size, 3, config.lr_milestones, config.lr_gamma)
    optimizer = create_optimizer(net, config.optimizer, schedule, config.momentum, config.weight_decay,
                                 optimizer_loss_scale(config.loss_scale_type, config.loss_scale),
                                 config.decay_norm_and_bias)
    step = build_train_step(net, nn.MSELoss(), optimizer, "O0",
                            create_loss_scale_manager(config.loss_scale_type, config.loss_scale))
    for _ in range(3):
        step(ms.Tensor(x), ms.Tensor(y))
    expected_weight, expected_bias = original_momentum_steps(weight0, bias0, x, y, steps=3)
    assert np.abs(expected_weight - weight0).max() > 1e-2  # the steps moved the weights
    np.testing.assert_allclose(net.weight.asnumpy(), expected_weight, rtol=0, atol=1e-6)
    np.testing.assert_allclose(net.bias.asnumpy(), expected_bias, rtol=0, atol=1e-6)


def test_decay_norm_and_bias_is_pytorch_sgd_weight_decay():
    """decay_norm_and_bias: every parameter decays, and two steps equal torch.optim.SGD(weight_decay=...)."""
    torch = pytest.importorskip("torch")
    net = SmallNet()
    optimizer = create_optimizer(net, "Momentum", 0.1, 0.9, weight_decay=1e-2, decay_norm_and_bias=True)
    assert set(optimizer.group_weight_decay) == {1e-2}
    assert len(optimizer.parameters) == len(DECAYED | NOT_DECAYED)

    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 5)).astype(np.float32)
    y = rng.normal(size=(6, 3)).astype(np.float32)
    weight0 = rng.normal(size=(3, 5)).astype(np.float32)
    bias0 = rng.normal(size=(3,)).astype(np.float32)
    dense = nn.Dense(5, 3, weight_init=ms.Tensor(weight0), bias_init=ms.Tensor(bias0))
    step = nn.TrainOneStepCell(nn.WithLossCell(dense, nn.MSELoss()),
                               create_optimizer(dense, "Momentum", 0.1, 0.9, 1e-2, decay_norm_and_bias=True))
    reference = torch.nn.Linear(5, 3)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(weight0))
        reference.bias.copy_(torch.from_numpy(bias0))
    sgd = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    for _ in range(2):
        step(ms.Tensor(x), ms.Tensor(y))
        sgd.zero_grad()
        torch.nn.functional.mse_loss(reference(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        sgd.step()
    np.testing.assert_allclose(dense.weight.asnumpy(), reference.weight.detach().numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(dense.bias.asnumpy(), reference.bias.detach().numpy(), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------ no-decay set
class TokenNet(nn.Cell):
    """A transformer-like set of names: tokens, a LayerNorm, a 1-D scale and a dense layer."""

    def __init__(self):
        super().__init__()
        self.cls_token = ms.Parameter(ms.Tensor(np.zeros((1, 1, 4), np.float32)), name="cls_token")
        self.pos_embed = ms.Parameter(ms.Tensor(np.zeros((1, 5, 4), np.float32)), name="pos_embed")
        self.norm = nn.LayerNorm((4,))
        self.layer_scale = ms.Parameter(ms.Tensor(np.ones(4, np.float32)), name="blocks.0.layer_scale")
        self.fc = nn.Dense(4, 3)

    def construct(self, x):
        return self.fc(self.norm(x + self.cls_token.mean() + self.pos_embed.mean()) * self.layer_scale)

    def no_weight_decay(self):
        return {"cls_token"}


def test_no_decay_options_exempt_1d_and_named_parameters():
    params = TokenNet().trainable_params()
    decayed, _ = weight_decay_groups(params)
    assert {p.name for p in decayed} == {"cls_token", "pos_embed", "blocks.0.layer_scale", "fc.weight"}
    decayed, _ = weight_decay_groups(params, one_dimensional=True)
    assert {p.name for p in decayed} == {"cls_token", "pos_embed", "fc.weight"}
    decayed, _ = weight_decay_groups(params, one_dimensional=True, names=("pos_embed", "layer_scale"))
    assert {p.name for p in decayed} == {"cls_token", "fc.weight"}  # "layer_scale" matches a trailing part
    decayed, _ = weight_decay_groups(params, decay_norm_and_bias=True, names=("embed",))
    assert "pos_embed" in {p.name for p in decayed}  # names match whole dotted parts, not substrings
    assert {"norm.gamma", "fc.bias"} <= {p.name for p in decayed}


def test_the_models_own_no_weight_decay_names_join_the_config_ones():
    optimizer = create_optimizer(TokenNet(), "AdamW", 1e-3, weight_decay=0.05, no_decay_names=("pos_embed",))
    decay_of = {p.name: float(wd.asnumpy()) for p, wd in zip(optimizer.parameters, optimizer.decoupled_decay)}
    assert decay_of["cls_token"] == 0.0 and decay_of["pos_embed"] == 0.0  # model's and config's
    assert decay_of["fc.weight"] == pytest.approx(0.05) and decay_of["blocks.0.layer_scale"] == pytest.approx(0.05)
    assert decay_of["norm.gamma"] == 0.0 and decay_of["fc.bias"] == 0.0


@pytest.mark.parametrize("betas, eps, key", [((0.9, 1.0), 1e-8, "adam_betas"), ((0.9,), 1e-8, "adam_betas"),
                                              ((0.9, 0.999), 0.0, "adam_eps")])
def test_invalid_adam_settings_name_the_key(betas, eps, key):
    with pytest.raises(DropCovError, match=key):
        create_optimizer(SmallNet(), "AdamW", 1e-3, betas=betas, eps=eps)


# ------------------------------------------------------------------------------------------------ AdamW
def numpy_adamw(weights, grads_per_step, lrs, decays, betas=(0.9, 0.999), eps=1e-8):
    """torch.optim.AdamW's update in float64: decoupled decay, then the bias-corrected Adam step."""
    beta1, beta2 = betas
    weights = {name: w.astype(np.float64) for name, w in weights.items()}
    m = {name: np.zeros_like(w) for name, w in weights.items()}
    v = {name: np.zeros_like(w) for name, w in weights.items()}
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        for name, g in grads.items():
            weights[name] *= 1.0 - lr * decays[name]
            m[name] = beta1 * m[name] + (1 - beta1) * g
            v[name] = beta2 * v[name] + (1 - beta2) * g * g
            m_hat, v_hat = m[name] / (1 - beta1 ** t), v[name] / (1 - beta2 ** t)
            weights[name] -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return weights


class ApplyGradients(nn.Cell):
    def __init__(self, optimizer):
        super().__init__(auto_prefix=False)  # keep the parameter names
        self.optimizer = optimizer

    def construct(self, *grads):
        return self.optimizer(grads)


@pytest.mark.parametrize("loss_scale", [1.0, 512.0])
def test_adamw_matches_numpy_over_several_steps(loss_scale):
    rng = np.random.default_rng(4)
    net = SmallNet()
    start = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    lrs = np.array([3e-3, 1e-2, 2e-2, 5e-3, 1e-2, 8e-3], np.float32)
    optimizer = create_optimizer(net, "AdamW", lrs, weight_decay=0.05, loss_scale=loss_scale,
                                 betas=(0.8, 0.99), eps=1e-6)
    names = [p.name for p in optimizer.parameters]
    apply = ApplyGradients(optimizer)
    grads_per_step = []
    for _ in range(len(lrs)):
        grads = {name: rng.normal(scale=0.1, size=start[name].shape) for name in names}
        grads["fc.bias"] *= 1e-3  # a tiny gradient: the bias correction and eps matter
        grads_per_step.append(grads)
        apply(*[ms.Tensor((grads[name] * loss_scale).astype(np.float32)) for name in names])
    decays = {name: 0.0 if name in NOT_DECAYED else 0.05 for name in names}
    expected = numpy_adamw(start, grads_per_step, lrs.astype(np.float64), decays, (0.8, 0.99), 1e-6)
    for param in optimizer.parameters:
        np.testing.assert_allclose(param.asnumpy(), expected[param.name], rtol=1e-5, atol=1e-6, err_msg=param.name)
    assert int(optimizer.global_step.asnumpy()[0]) == len(lrs)


def test_adamw_is_registered_and_keeps_moments_under_adam_names():
    assert OPTIMIZER_NAMES == ("Momentum", "AdamW")
    optimizer = create_optimizer(SmallNet(), "AdamW", 1e-3)
    state = {p.name for p in optimizer.get_parameters()} - {p.name for p in optimizer.parameters}
    assert {name.split(".")[0] for name in state} == {"moment1", "moment2", "global_step", "learning_rate"}
