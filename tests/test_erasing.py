"""Random erasing: how often, how large, which shape and what fill, over many draws (timm's distribution)."""
import math

import numpy as np
import pytest

from src.data.erasing import RandomErasing
from src.errors import DropCovError

SENTINEL = 100.0


def erased_boxes(eraser, draws, shape=(3, 48, 64), seed=0):
    """(top, bottom, left, right, erased image) of every image that was erased."""
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(draws):
        image = eraser(np.full(shape, SENTINEL, np.float32), rng)
        changed = np.any(image != SENTINEL, axis=0)
        if changed.any():
            rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
            found.append((rows[0], rows[-1] + 1, cols[0], cols[-1] + 1, image))
    return found


def test_probability_area_and_log_symmetric_aspect():
    eraser = RandomErasing(probability=0.25, mode="pixel")
    draws = 8000
    boxes = erased_boxes(eraser, draws)
    assert len(boxes) / draws == pytest.approx(0.25, abs=0.02)
    areas = np.array([(bottom - top) * (right - left) for top, bottom, left, right, _ in boxes]) / (48 * 64)
    assert areas.min() > 0.01 and areas.max() < 1 / 3 + 0.02
    # U(0.02, 1/3), minus boxes that do not fit (tall or wide ones near 1/3 are redrawn): mean a little below 0.177
    assert 0.15 < areas.mean() < 0.18
    log_aspect = np.array([math.log((bottom - top) / (right - left)) for top, bottom, left, right, _ in boxes])
    assert abs(np.mean(log_aspect)) < 0.06  # as many tall boxes as wide ones (MindSpore's draw is lopsided)
    assert np.abs(log_aspect).max() <= -math.log(0.3) + 0.25
    assert np.mean(log_aspect > 0) == pytest.approx(0.5, abs=0.05)


def test_fill_modes():
    for mode in ("pixel", "rand", "const"):
        boxes = erased_boxes(RandomErasing(probability=1.0, mode=mode), 300, seed=1)
        assert len(boxes) == 300
        inside = [image[:, top:bottom, left:right] for top, bottom, left, right, image in boxes]
        if mode == "pixel":
            values = np.concatenate([box.ravel() for box in inside])
            assert abs(values.mean()) < 0.01 and values.std() == pytest.approx(1.0, abs=0.01)
        elif mode == "rand":  # one normal value per channel and box
            assert all(np.all(box == box[:, :1, :1]) for box in inside)
            per_channel = np.array([box[:, 0, 0] for box in inside])
            assert per_channel.std() == pytest.approx(1.0, abs=0.1)
        else:
            assert all(np.all(box == 0) for box in inside)


def test_several_boxes_share_the_area():
    rng = np.random.default_rng(2)
    eraser = RandomErasing(probability=1.0, mode="const", max_count=3)
    fractions = [np.mean(eraser(np.ones((1, 60, 60), np.float32), rng) == 0) for _ in range(3000)]
    assert 0.1 < np.mean(fractions) < 0.2  # count ~ U{1,2,3}, area/count each: overlaps keep it below 0.177


@pytest.mark.parametrize("kwargs, key", [(dict(probability=1.5), "random_erase_prob"),
                                         (dict(mode="noise"), "random_erase_mode"),
                                         (dict(max_count=0), "random_erase_count")])
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(DropCovError, match=key):
        RandomErasing(**kwargs)
