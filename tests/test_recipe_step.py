"""The recipe's training step: today's step when nothing is asked for, gradient accumulation equal to one
step on the k-times batch, global-norm clipping, the dynamic loss scale on the CPU, and an exact resume of
the EMA and the accumulators from a checkpoint of the cell."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from src.engine.ema import ModelEma
from src.engine.loss import create_loss
from src.engine.optimizer import create_loss_scale_manager, create_optimizer, optimizer_loss_scale
from src.engine.recipe_step import RecipeTrainStep
from src.engine.train_step import (
    build_train_step,
    create_train_step,
    optimizer_loss_scale_for,
    uses_recipe_step,
)
from src.errors import DropCovError
from src.runtime.checkpoint import load_checkpoint_file, save_checkpoint_atomic

CLASSES = 3


class DenseNet(nn.Cell):
    """No BatchNorm: a step on a batch is the mean of per-image terms, so accumulation is exact."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Dense(6, 8)
        self.fc2 = nn.Dense(8, CLASSES)

    def construct(self, x):
        return self.fc2(ops.tanh(self.fc1(x)))


class BatchNormNet(nn.Cell):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Dense(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.fc2 = nn.Dense(8, CLASSES)

    def construct(self, x):
        return self.fc2(ops.relu(self.bn(self.fc1(x))))


def batches(count, size, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, 6)).astype(np.float32), rng.integers(0, CLASSES, size).astype(np.int32))
            for _ in range(count)]


def build(net_class=DenseNet, optimizer="AdamW", kind="fixed", scale=1.0, seed=0, **recipe):
    """Network, optimizer and step as the engine builds them (optimizer scale by the step's rule)."""
    ms.set_seed(seed)
    net = net_class()
    recipe_step = uses_recipe_step(recipe.get("accumulation_steps", 1), recipe.get("clip_grad_norm", 0.0),
                                   recipe.get("ema") is not None)
    if recipe.get("ema") is True:
        recipe["ema"] = ModelEma(net, decay=0.9, warmup=True)
    lr = np.array([0.05, 0.02, 0.04, 0.01, 0.03, 0.02], np.float32)
    opt = create_optimizer(net, optimizer, lr, 0.9, 0.01, optimizer_loss_scale_for(kind, scale, recipe_step))
    manager = ms.amp.FixedLossScaleManager(scale, False) if kind == "fixed" else \
        ms.amp.DynamicLossScaleManager(scale, 2, 2000)
    step = create_train_step(net, create_loss(CLASSES, 0.1), opt, "O0", manager, **recipe)
    step.set_train()
    return net, opt, step


def weights(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def test_no_recipe_setting_gives_todays_step_bit_for_bit():
    net, _, step = build(optimizer="Momentum", scale=1024.0)
    assert isinstance(step, nn.TrainOneStepCell) and not isinstance(step, RecipeTrainStep)
    ms.set_seed(0)
    net_today = DenseNet()
    opt_today = create_optimizer(net_today, "Momentum", np.array([0.05, 0.02, 0.04], np.float32), 0.9, 0.01,
                                 optimizer_loss_scale("fixed", 1024.0))
    today = build_train_step(net_today, create_loss(CLASSES, 0.1), opt_today, "O0",
                             create_loss_scale_manager("fixed", 1024.0))
    for x, y in batches(3, 4):
        assert step(Tensor(x), Tensor(y)).asnumpy() == today(Tensor(x), Tensor(y)).asnumpy()
    for name, value in weights(net).items():
        np.testing.assert_array_equal(value, weights(net_today)[name])


@pytest.mark.parametrize("optimizer", ["Momentum", "AdamW"])
def test_accumulating_k_batches_equals_one_step_on_the_k_times_batch(optimizer):
    k = 3  # first, middle and last micro-batch of a cycle
    net_big, _, step_big = build(optimizer=optimizer, scale=1024.0)
    net_acc, opt_acc, step_acc = build(optimizer=optimizer, scale=1024.0, accumulation_steps=k)
    assert opt_acc.loss_scale == 1.0 and step_acc.accumulation_steps == k
    data = batches(2 * k, 2)
    for update in range(2):
        group = data[update * k:(update + 1) * k]
        big_loss = step_big(Tensor(np.concatenate([x for x, _ in group])), Tensor(np.concatenate([y for _, y in group])))
        losses = [float(step_acc(Tensor(x), Tensor(y)).asnumpy()) for x, y in group]
        assert np.mean(losses) == pytest.approx(float(big_loss.asnumpy()), rel=1e-5)
        assert int(opt_acc.global_step.asnumpy()[0]) == update + 1  # one optimizer update per k batches
        for name, value in weights(net_big).items():
            np.testing.assert_allclose(weights(net_acc)[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert int(step_acc.micro_steps.asnumpy()) == 0  # a new cycle starts (it overwrites the accumulators)


def test_partial_accumulation_changes_no_weight():
    net, opt, step = build(accumulation_steps=4)
    before = weights(net)
    for x, y in batches(3, 2):
        step(Tensor(x), Tensor(y))
    assert int(step.micro_steps.asnumpy()) == 3 and int(opt.global_step.asnumpy()[0]) == 0
    for name, value in weights(net).items():
        np.testing.assert_array_equal(value, before[name])
    assert any(np.any(p.asnumpy() != 0) for p in step.accumulators)


def test_clip_grad_norm_scales_the_global_norm_down_to_the_limit():
    """Plain SGD (momentum 0, lr 1, no decay): the weight change is minus the gradient actually applied."""
    x, y = batches(1, 4)[0]

    def applied_gradient(clip):
        ms.set_seed(0)
        net = DenseNet()
        opt = nn.Momentum(net.trainable_params(), 1.0, 0.0)
        step = create_train_step(net, create_loss(CLASSES), opt, clip_grad_norm=clip)
        step.set_train()
        before = weights(net)
        step(Tensor(x), Tensor(y))
        return {name: before[name] - value for name, value in weights(net).items()}

    unclipped = applied_gradient(1e6)  # a limit above the norm: clipping on, nothing clipped
    norm = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in unclipped.values()))
    limit = norm / 4
    clipped = applied_gradient(limit)
    for name, gradient in unclipped.items():
        np.testing.assert_allclose(clipped[name], gradient * limit / norm, rtol=1e-4, atol=1e-7)


def test_dynamic_loss_scale_on_cpu_skips_an_overflowing_update_and_halves_the_scale():
    net, opt, step = build(kind="dynamic", scale=2.0 ** 10, ema=True)
    good = batches(2, 4)
    step(Tensor(good[0][0]), Tensor(good[0][1]))
    before = weights(net)
    bad = good[1][0].copy()
    bad[0, 0] = np.inf
    step(Tensor(bad), Tensor(good[1][1]))
    for name, value in weights(net).items():
        np.testing.assert_array_equal(value, before[name])  # no update, no EMA move
    assert float(step.scale_sense.asnumpy()) == 2.0 ** 9
    assert int(opt.global_step.asnumpy()[0]) == 1 and int(step.ema.num_updates.asnumpy()) == 1
    step(Tensor(good[1][0]), Tensor(good[1][1]))
    assert int(opt.global_step.asnumpy()[0]) == 2 and float(step.scale_sense.asnumpy()) == 2.0 ** 9


@pytest.mark.slow
def test_resume_restores_ema_accumulators_and_counts_bit_exactly(tmp_path):
    data = batches(8, 4, seed=1)
    settings = dict(net_class=BatchNormNet, kind="dynamic", scale=256.0, accumulation_steps=2, clip_grad_norm=0.5,
                    ema=True)
    net, _, step = build(**settings)
    for x, y in data[:5]:  # 2 updates and one batch accumulated
        step(Tensor(x), Tensor(y))
    path = save_checkpoint_atomic(step, tmp_path / "mid.ckpt")
    for x, y in data[5:]:
        step(Tensor(x), Tensor(y))
    uninterrupted = {p.name: p.asnumpy().copy() for p in step.get_parameters()}

    resumed_net, _, resumed = build(**{**settings, "seed": 7})  # other initial weights: all must be loaded
    not_loaded, _ = ms.load_param_into_net(resumed, load_checkpoint_file(path))
    assert not_loaded == []
    resumed.sync_host_state()
    assert resumed._pending == 1
    for x, y in data[5:]:
        resumed(Tensor(x), Tensor(y))
    final = {p.name: p.asnumpy() for p in resumed.get_parameters()}
    assert set(final) == set(uninterrupted)
    assert {"ema_num_updates", "accum.micro_steps", "scale_sense", "ema.bn.moving_mean"} <= set(final)
    for name, value in uninterrupted.items():
        np.testing.assert_array_equal(final[name], value, err_msg=name)


def test_accumulation_count_past_the_setting_is_a_clear_error():
    _, _, step = build(accumulation_steps=2)
    step.micro_steps.set_data(Tensor(3, ms.int32))
    with pytest.raises(DropCovError, match="3 accumulated micro-batches.*accumulation_steps is 2"):
        step.sync_host_state()


@pytest.mark.parametrize("kwargs, message", [
    (dict(accumulation_steps=0), "accumulation_steps"),
    (dict(clip_grad_norm=-1.0), "clip_grad_norm"),
])
def test_invalid_settings_name_the_key(kwargs, message):
    net = DenseNet()
    with pytest.raises(DropCovError, match=message):
        RecipeTrainStep(nn.WithLossCell(net, create_loss(CLASSES)), create_optimizer(net, "AdamW", 0.1), **kwargs)


def test_an_optimizer_that_unscales_itself_is_refused():
    net = DenseNet()
    optimizer = create_optimizer(net, "Momentum", 0.1, loss_scale=1024.0)
    with pytest.raises(DropCovError, match="loss_scale 1.0"):
        create_train_step(net, create_loss(CLASSES), optimizer, accumulation_steps=2)


def test_recipe_step_trains_under_amp_o2_with_float32_gradients_and_ema():
    ms.set_seed(0)
    net = BatchNormNet()
    ema = ModelEma(net, decay=0.5)
    optimizer = create_optimizer(net, "AdamW", 0.01, loss_scale=1.0)
    step = create_train_step(net, create_loss(CLASSES, 0.1), optimizer, "O2", ms.amp.FixedLossScaleManager(128.0, False),
                             accumulation_steps=2, clip_grad_norm=1.0, ema=ema)
    step.set_train()
    before = weights(net)
    losses = [float(step(Tensor(x), Tensor(y)).asnumpy()) for x, y in batches(4, 4)]
    assert np.all(np.isfinite(losses)) and int(optimizer.global_step.asnumpy()[0]) == 2
    assert all(p.dtype == ms.float32 for p in step.accumulators)
    after = weights(net)
    assert all(np.isfinite(value).all() for value in after.values())
    assert any(not np.array_equal(after[name], before[name]) for name in before)
    assert int(ema.num_updates.asnumpy()) == 2
