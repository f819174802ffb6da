"""Model EMA: timm's decay schedule, the compiled update against numpy (weights and BN statistics),
swapping the averages in for evaluation, and reading them from a checkpoint."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from src.engine.ema import ModelEma, ema_decay
from src.engine.loss import create_loss
from src.engine.optimizer import create_optimizer
from src.engine.recipe_step import RecipeTrainStep
from src.engine.train_step import create_train_step
from src.errors import DropCovError


class BatchNormNet(nn.Cell):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Dense(5, 6)
        self.bn = nn.BatchNorm1d(6, momentum=0.8)
        self.fc2 = nn.Dense(6, 3)

    def construct(self, x):
        return self.fc2(ops.relu(self.bn(self.fc1(x))))


def timm_v3_decay(step, decay, use_warmup, warmup_gamma=1.0, warmup_power=2 / 3, min_decay=0.0):
    """timm ModelEmaV3.get_decay(step) with update_after_step=0, written out."""
    step = max(0, step - 1)
    if step <= 0:
        return 0.0
    if not use_warmup:
        return decay
    return max(min(1 - (1 + step / warmup_gamma) ** -warmup_power, decay), min_decay)


@pytest.mark.parametrize("warmup", [False, True])
def test_decay_schedule_is_timms(warmup):
    for step in (1, 2, 3, 10, 1000, 10 ** 6):
        assert ema_decay(step, 0.9998, warmup) == pytest.approx(timm_v3_decay(step, 0.9998, warmup))
    assert ema_decay(1, 0.9998, warmup) == 0.0  # the first update copies the weights
    if warmup:
        assert ema_decay(2, 0.9998, True) == pytest.approx(1 - 2 ** (-2 / 3))
        assert ema_decay(10 ** 9, 0.9998, True) == 0.9998
        assert ema_decay(3, 0.99, True, min_decay=0.9) == 0.9


@pytest.mark.parametrize("decay, key", [(1.0, "model_ema_decay"), (0.0, "model_ema_decay")])
def test_invalid_decay_names_the_key(decay, key):
    with pytest.raises(DropCovError, match=key):
        ModelEma(BatchNormNet(), decay)


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_in_the_step_matches_numpy_over_several_updates(warmup):
    """Weights and BN moving statistics are averaged with d_t after every update."""
    ms.set_seed(3)
    net = BatchNormNet()
    ema = ModelEma(net, decay=0.7, warmup=warmup)
    float_names = [p.name for p in net.get_parameters()]
    assert {p.name for p in ema.averages} == {"ema." + name for name in float_names}
    optimizer = create_optimizer(net, "AdamW", 0.05, weight_decay=0.01)
    step = create_train_step(net, create_loss(3, 0.1), optimizer, ema=ema)
    assert isinstance(step, RecipeTrainStep)
    step.set_train()
    average = {p.name: p.asnumpy().astype(np.float64) for p in net.get_parameters()}
    rng = np.random.default_rng(0)
    for update in range(1, 6):
        x = Tensor(rng.standard_normal((4, 5)).astype(np.float32))
        y = Tensor(rng.integers(0, 3, 4).astype(np.int32))
        step(x, y)
        decay = timm_v3_decay(update, 0.7, warmup)
        for param in net.get_parameters():
            average[param.name] += (1 - decay) * (param.asnumpy() - average[param.name])
        for param in ema.averages:
            np.testing.assert_allclose(param.asnumpy(), average[param.name[len("ema."):]], rtol=1e-5, atol=1e-6)
    assert int(ema.num_updates.asnumpy()) == 5
    averages = {p.name: p.asnumpy() for p in ema.averages}
    assert not np.allclose(averages["ema.bn.moving_mean"], 0)  # the BN statistics moved and were averaged


def test_applied_swaps_the_averages_in_and_back():
    net = BatchNormNet()
    ema = ModelEma(net, decay=0.5)
    raw = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    for average in ema.averages:
        average.set_data(Tensor(np.full(average.shape, 7.0, np.float32)))
    with ema.applied():
        assert all(np.all(p.asnumpy() == 7.0) for p in net.get_parameters())
    for param in net.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), raw[param.name])
    assert all(np.all(a.asnumpy() == 7.0) for a in ema.averages)
    ema.reset()
    for average, weight in zip(ema.averages, ema.weights):
        np.testing.assert_array_equal(average.asnumpy(), weight.asnumpy())

