"""Learning-rate schedules against their formulas, written out step by step."""
import math

import numpy as np
import pytest

from src.engine.lr_schedule import LR_DECAY_MODES, create_lr_schedule, lr_at_step
from src.errors import DropCovError


def reference_lr(mode, lr_init, lr_max, lr_end, warmup_epochs, total_epochs, steps_per_epoch,
                 milestones=(30, 60, 90), gamma=0.1, power=2.0):
    """One step at a time, straight from the docstring's formulas."""
    total = total_epochs * steps_per_epoch
    warmup = int(round(warmup_epochs * steps_per_epoch))
    values = []
    for i in range(total):
        if i < warmup:
            values.append(lr_init + (lr_max - lr_init) * i / warmup)
            continue
        t, d = i - warmup, total - warmup
        if mode == "multistep":
            epoch = i // steps_per_epoch
            values.append(lr_max * gamma ** sum(epoch >= m for m in milestones))
        elif mode == "linear":
            values.append(lr_end + (lr_max - lr_end) * (1 - t / d))
        elif mode == "cosine":
            values.append(lr_end + (lr_max - lr_end) * (1 + math.cos(math.pi * t / d)) / 2)
        elif mode == "poly":
            values.append(lr_end + (lr_max - lr_end) * (1 - t / d) ** power)
        else:
            values.append(lr_max)
    return np.array(values)


def test_published_multistep_recipe():
    steps = 3
    lr = create_lr_schedule("multistep", 0.0, 0.12, 0.0, 0, 100, steps, milestones=(30, 60, 90), gamma=0.1)
    assert lr.dtype == np.float32 and lr.shape == (100 * steps,)
    for epoch, expected in [(0, 0.12), (29, 0.12), (30, 0.012), (59, 0.012), (60, 0.0012), (89, 0.0012),
                            (90, 0.00012), (99, 0.00012)]:
        assert np.allclose(lr[epoch * steps:(epoch + 1) * steps], expected, rtol=1e-6)


@pytest.mark.parametrize("mode", LR_DECAY_MODES)
@pytest.mark.parametrize("warmup_epochs", [0, 2, 1.5])
def test_every_mode_matches_its_formula(mode, warmup_epochs):
    args = dict(mode=mode, lr_init=0.01, lr_max=0.4, lr_end=0.001, warmup_epochs=warmup_epochs,
                total_epochs=12, steps_per_epoch=4, milestones=(4, 8), gamma=0.5, power=3.0)
    lr = create_lr_schedule(**args)
    assert lr.dtype == np.float32 and lr.shape == (48,)
    assert np.allclose(lr, reference_lr(**args), rtol=1e-6, atol=1e-9)


def test_warmup_starts_at_lr_init_and_reaches_lr_max():
    lr = create_lr_schedule("cosine", 0.0, 0.1, 0.0, warmup_epochs=2, total_epochs=10, steps_per_epoch=5)
    assert lr[0] == 0.0
    assert np.all(np.diff(lr[:11]) > 0)
    assert np.isclose(lr[10], 0.1)
    assert np.all(np.diff(lr[10:]) <= 0) and lr[-1] > 0


def test_invalid_mode_lists_valid_modes():
    with pytest.raises(DropCovError) as error:
        create_lr_schedule("steps", 0.0, 0.1, 0.0, 0, 10, 5)
    for mode in LR_DECAY_MODES:
        assert mode in str(error.value)
    assert "lr_decay_mode" in str(error.value)


@pytest.mark.parametrize("kwargs, key", [
    (dict(warmup_epochs=11), "warmup_epochs"),
    (dict(total_epochs=0), "epoch_size"),
    (dict(steps_per_epoch=0), "steps per epoch"),
    (dict(milestones=(60, 30)), "lr_milestones"),
])
def test_invalid_arguments_name_the_key(kwargs, key):
    args = dict(mode="multistep", lr_init=0.0, lr_max=0.1, lr_end=0.0, warmup_epochs=0, total_epochs=10,
                steps_per_epoch=5)
    args.update(kwargs)
    with pytest.raises(DropCovError, match=key):
        create_lr_schedule(**args)


def test_lr_at_step_reads_the_schedule_and_rejects_steps_past_the_end():
    lr = create_lr_schedule("multistep", 0.0, 0.12, 0.0, 0, 4, 10, milestones=(2,), gamma=0.1)
    assert lr_at_step(lr, 0) == pytest.approx(0.12)
    assert lr_at_step(lr, 19) == pytest.approx(0.12)
    assert lr_at_step(lr, 20) == pytest.approx(0.012)
    with pytest.raises(DropCovError, match="40 steps"):
        lr_at_step(lr, 40)


def timm_cosine(t, base_lr, warmup_lr_init, warmup_t, t_initial, lr_min):
    """timm's CosineLRScheduler._get_lr(t) with its defaults (warmup_prefix=False, one cycle), as DeiT uses it."""
    if t < warmup_t:
        return warmup_lr_init + t * (base_lr - warmup_lr_init) / warmup_t
    return lr_min + 0.5 * (base_lr - lr_min) * (1 + math.cos(math.pi * t / t_initial))


def test_per_epoch_schedule_is_timms_cosine_as_deit_trains():
    # DeiT-S: lr 5e-4 * 1024 / 512, warmup_lr 1e-6, min_lr 1e-5, 5 warmup epochs (here 30 epochs of 3 steps)
    epochs, steps, base = 30, 3, 5e-4 * 1024 / 512
    lr = create_lr_schedule("cosine", 1e-6, base, 1e-5, 5, epochs, steps, unit="epoch", warmup_prefix=False)
    expected = [timm_cosine(i // steps, base, 1e-6, 5, epochs, 1e-5) for i in range(epochs * steps)]
    np.testing.assert_allclose(lr, expected, rtol=1e-6)
    assert lr[0] == np.float32(1e-6) and np.all(lr[:steps] == lr[0])  # constant within an epoch


def test_per_step_schedule_without_warmup_prefix_is_timms_on_updates():
    epochs, steps = 6, 5
    lr = create_lr_schedule("cosine", 0.0, 0.1, 1e-3, 1.4, epochs, steps, warmup_prefix=False)
    expected = [timm_cosine(i, 0.1, 0.0, 7, epochs * steps, 1e-3) for i in range(epochs * steps)]
    np.testing.assert_allclose(lr, expected, rtol=1e-6)


def test_per_epoch_multistep_with_warmup():
    lr = create_lr_schedule("multistep", 0.0, 0.1, 0.0, 2, 8, 4, milestones=(4, 6), gamma=0.1, unit="epoch")
    per_epoch = lr.reshape(8, 4)
    assert np.all(per_epoch == per_epoch[:, :1])
    np.testing.assert_allclose(per_epoch[:, 0], [0.0, 0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


@pytest.mark.parametrize("kwargs, key", [(dict(unit="update"), "lr_schedule_unit"),
                                         (dict(unit="epoch", warmup_epochs=1.5), "whole number")])
def test_invalid_unit_settings_name_the_key(kwargs, key):
    args = dict(mode="cosine", lr_init=0.0, lr_max=0.1, lr_end=0.0, warmup_epochs=0, total_epochs=10,
                steps_per_epoch=5)
    args.update(kwargs)
    with pytest.raises(DropCovError, match=key):
        create_lr_schedule(**args)
