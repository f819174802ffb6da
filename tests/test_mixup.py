"""Mixup/CutMix against numpy: targets with label smoothing folded in, CutMix boxes and the corrected weights,
the three modes, and the switch/apply probabilities over many draws."""
import numpy as np
import pytest

from src.data.mixup import MixupCutmix, box_lam, cutmix_box, mixup_target
from src.errors import DropCovError

K = 5


def smoothed_one_hot(labels, smoothing):
    rows = np.full((len(labels), K), smoothing / K)
    rows[np.arange(len(labels)), labels] += 1.0 - smoothing
    return rows


def test_targets_fold_smoothing_into_the_mixed_one_hot_rows():
    labels = np.array([0, 3, 3, 1])
    for lam in (1.0, 0.3, np.array([0.2, 0.5, 1.0, 0.9])):
        targets = mixup_target(labels, K, lam, smoothing=0.1)
        weight = np.reshape(lam, (-1, 1)) if np.ndim(lam) else lam
        expected = weight * smoothed_one_hot(labels, 0.1) + (1 - weight) * smoothed_one_hot(labels[::-1], 0.1)
        assert targets.dtype == np.float32 and targets.shape == (4, K)
        np.testing.assert_allclose(targets, expected, rtol=1e-6)
        np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)


def test_cutmix_box_is_a_clipped_square_root_box():
    rng = np.random.default_rng(0)
    for lam in (0.1, 0.5, 0.9):
        for _ in range(200):
            top, bottom, left, right = cutmix_box(40, 60, lam, rng)
            cut_h, cut_w = int(40 * np.sqrt(1 - lam)), int(60 * np.sqrt(1 - lam))
            assert 0 <= top <= bottom <= 40 and 0 <= left <= right <= 60
            assert bottom - top <= 2 * (cut_h // 2) and right - left <= 2 * (cut_w // 2)
            centre_inside = 0 < top < 40 - cut_h and 0 < left < 60 - cut_w
            if centre_inside:
                assert (bottom - top, right - left) == (2 * (cut_h // 2), 2 * (cut_w // 2))
    box = (3, 13, 10, 30)
    assert box_lam(box, 40, 60) == pytest.approx(1 - 200 / 2400)


def test_minmax_boxes_stay_inside_with_sides_in_range():
    rng = np.random.default_rng(1)
    for _ in range(500):
        top, bottom, left, right = cutmix_box(50, 50, 0.5, rng, (0.2, 0.8))
        assert 10 <= bottom - top < 40 and 10 <= right - left < 40 and bottom <= 50 and right <= 50


def index_images(batch, height=16, width=20):
    """Image i is the constant i + 1: a pixel's value tells which image it came from."""
    return np.broadcast_to(np.arange(1, batch + 1, dtype=np.float32)[:, None, None, None],
                           (batch, 3, height, width)).copy()


def test_batch_cutmix_box_area_matches_the_label_weights():
    mixer = MixupCutmix(K, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1)
    labels = np.array([0, 1, 2, 3, 4, 0])
    for seed in range(20):
        images, targets = mixer(index_images(6), labels, np.random.default_rng(seed))
        from_partner = images[:, 0] == (6 - np.arange(6))[:, None, None]  # pixels of image 5 - i
        lam = 1 - from_partner[0].mean()
        assert np.all(from_partner == from_partner[0])  # one box for the whole batch
        rows, cols = np.flatnonzero(from_partner[0].any(1)), np.flatnonzero(from_partner[0].any(0))
        if rows.size:  # the changed pixels form one rectangle
            assert from_partner[0, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
        np.testing.assert_allclose(targets, mixup_target(labels, K, lam, 0.1), rtol=1e-6)


def test_batch_mixup_blends_every_pair_with_the_target_weight():
    mixer = MixupCutmix(K, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0)
    labels = np.array([4, 2, 2, 0])
    images, targets = mixer(index_images(4), labels, np.random.default_rng(5))
    lam = (images[0, 0, 0, 0] - 4) / (1 - 4)  # x_0 = lam * 1 + (1 - lam) * 4
    np.testing.assert_allclose(images[:, 0, 0, 0], lam * np.arange(1, 5) + (1 - lam) * np.arange(4, 0, -1), rtol=1e-5)
    np.testing.assert_allclose(targets, mixup_target(labels, K, lam), rtol=1e-5)


@pytest.mark.parametrize("mode", ["elem", "pair"])
def test_per_element_and_pair_modes_weight_each_image_by_its_own_mix(mode):
    mixer = MixupCutmix(K, mixup_alpha=0.5, cutmix_alpha=1.0, mode=mode, label_smoothing=0.1)
    labels = np.array([0, 1, 2, 3, 4, 1, 2, 3])
    images, targets = mixer(index_images(8), labels, np.random.default_rng(3))
    own = np.arange(1, 9, dtype=np.float64)[:, None, None]
    partner = own[::-1]
    pixels = images[:, 0].astype(np.float64)
    is_cut = np.isclose(pixels, own) | np.isclose(pixels, partner)
    lams = np.where(is_cut.all(axis=(1, 2)), np.isclose(pixels, own).mean(axis=(1, 2)),
                    ((pixels - partner) / (own - partner)).mean(axis=(1, 2)))
    np.testing.assert_allclose(targets, mixup_target(labels, K, lams, 0.1), rtol=1e-5, atol=1e-6)
    if mode == "pair":
        np.testing.assert_allclose(lams, lams[::-1], rtol=1e-5)
    assert len(set(np.round(lams, 4))) > 2  # not one draw for all


def test_switch_and_apply_probabilities():
    mixer = MixupCutmix(K, mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.7, switch_prob=0.3)
    rng = np.random.default_rng(0)
    draws = [mixer.draw(rng) for _ in range(20000)]
    mixed = [(lam, cut) for lam, cut in draws if lam != 1.0]
    assert len(mixed) / len(draws) == pytest.approx(0.7, abs=0.015)
    assert np.mean([cut for _, cut in mixed]) == pytest.approx(0.3, abs=0.015)
    mixup_lams = np.array([lam for lam, cut in mixed if not cut])
    assert mixup_lams.mean() == pytest.approx(0.5, abs=0.01)  # Beta(0.8, 0.8)
    assert mixup_lams.var() == pytest.approx(0.25 / 2.6, abs=0.005)  # ab / ((a+b)^2 (a+b+1))


@pytest.mark.parametrize("kwargs, key", [(dict(mixup_alpha=0.0, cutmix_alpha=0.0), "mixup_alpha > 0"),
                                         (dict(mode="row"), "mixup_mode"), (dict(prob=2.0), "mixup_prob"),
                                         (dict(cutmix_minmax=(0.8, 0.2)), "cutmix_minmax")])
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(DropCovError, match=key):
        MixupCutmix(K, **kwargs)


def test_an_odd_batch_is_refused():
    with pytest.raises(DropCovError, match="even batch size"):
        MixupCutmix(K)(index_images(3), np.zeros(3, int), np.random.default_rng(0))
