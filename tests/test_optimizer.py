"""Weight-decay groups, loss-scale agreement and the learning rate at a restored global step."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from src.engine.lr_schedule import create_lr_schedule
from src.engine.optimizer import (
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
