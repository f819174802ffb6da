"""timm's RandAugment: the policy string, each operation against numpy or Pillow on fixed inputs, and the
statistics of the per-image plan (operation choice, probability, magnitude noise, sign)."""
import math

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from src.data.augment import (
    RAND_INCREASING_OPERATIONS,
    RAND_OPERATIONS,
    RandAugment,
    RandAugmentSpec,
    apply_operation,
    operation_argument,
    parse_rand_augment,
)
from src.errors import DropCovError

FILL = (124, 116, 104)


def picture(height=24, width=40, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([6 * x, 9 * y, 3 * (x + y)], -1) + rng.normal(0, 20, (height, width, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def run(name, image, magnitude=9.0, negate=False, interpolation="bicubic"):
    return np.asarray(apply_operation(Image.fromarray(image), name, magnitude, negate, FILL, interpolation))


def test_policy_string_of_deit():
    spec = parse_rand_augment("rand-m9-mstd0.5-inc1")
    assert spec == RandAugmentSpec(magnitude=9, num_layers=2, magnitude_std=0.5, magnitude_max=10, prob=0.5,
                                   increasing=True)
    assert spec.operations == RAND_INCREASING_OPERATIONS and len(spec.operations) == 15
    other = parse_rand_augment("rand-n3-m7-mstd101-mmax15-p0.3")
    assert (other.num_layers, other.magnitude, other.magnitude_max, other.prob) == (3, 7, 15, 0.3)
    assert math.isinf(other.magnitude_std) and other.operations == RAND_OPERATIONS
    assert parse_rand_augment("rand").magnitude == 10 and not parse_rand_augment("rand-inc0").increasing


@pytest.mark.parametrize("text, message", [("augmix-m3", "start with 'rand'"), ("rand-x5", "'x5'"),
                                           ("rand-m", "'m'"), ("rand-n0", "n >= 1"), ("rand-p2", "p <= 1")])
def test_bad_policy_strings_name_the_part(text, message):
    with pytest.raises(DropCovError, match=f"auto_augment.*{message}"):
        parse_rand_augment(text)


def test_level_arguments_follow_timms_formulas():
    m = 9.0
    assert operation_argument("Rotate", m) == pytest.approx(27.0)
    assert operation_argument("Rotate", m, negate=True) == pytest.approx(-27.0)
    assert operation_argument("ShearX", m, True) == pytest.approx(-0.27)
    assert operation_argument("TranslateYRel", m) == pytest.approx(0.405)
    assert operation_argument("Color", m) == pytest.approx(1.72)
    assert operation_argument("ColorIncreasing", m) == pytest.approx(1.81)
    assert operation_argument("ContrastIncreasing", m, True) == pytest.approx(0.19)
    assert operation_argument("BrightnessIncreasing", 10.0, True) == pytest.approx(0.1)  # floor 0.1
    assert operation_argument("Posterize", m) == 3 and operation_argument("PosterizeIncreasing", m) == 1
    assert operation_argument("Solarize", m) == 230 and operation_argument("SolarizeIncreasing", m) == 26
    assert operation_argument("SolarizeAdd", m) == 99 and operation_argument("SolarizeAdd", 10.0) == 110
    assert operation_argument("Equalize", m) is None


def test_lookup_table_operations_match_numpy():
    image = picture()
    wide = image.astype(np.int64)
    np.testing.assert_array_equal(run("Invert", image), 255 - image)
    np.testing.assert_array_equal(run("SolarizeIncreasing", image), np.where(wide >= 26, 255 - wide, wide))
    np.testing.assert_array_equal(run("SolarizeAdd", image), np.where(wide < 128, np.minimum(255, wide + 99), wide))
    np.testing.assert_array_equal(run("PosterizeIncreasing", image), image & 0b10000000)  # 1 bit kept
    np.testing.assert_array_equal(run("Posterize", image, 10.0), image & 0b11110000)


def test_enhancements_match_their_blend_formulas():
    image = picture(seed=1)
    as_float = image.astype(np.float64)
    factor = operation_argument("BrightnessIncreasing", 9.0, True)  # 0.19: darker
    np.testing.assert_allclose(run("BrightnessIncreasing", image, negate=True), np.clip(as_float * factor, 0, 255),
                               atol=1)
    grey = np.asarray(Image.fromarray(image).convert("L"), np.float64)[..., None]
    factor = operation_argument("Color", 9.0)
    np.testing.assert_allclose(run("Color", image), np.clip(grey + factor * (as_float - grey), 0, 255), atol=1)
    mean = int(grey.mean() + 0.5)
    factor = operation_argument("ContrastIncreasing", 6.0)
    np.testing.assert_allclose(run("ContrastIncreasing", image, 6.0), np.clip(mean + factor * (as_float - mean), 0, 255),
                               atol=1)
    sharp = ImageEnhance.Sharpness(Image.fromarray(image)).enhance(operation_argument("Sharpness", 9.0))
    np.testing.assert_array_equal(run("Sharpness", image), np.asarray(sharp))
    np.testing.assert_array_equal(run("AutoContrast", image), np.asarray(ImageOps.autocontrast(Image.fromarray(image))))
    np.testing.assert_array_equal(run("Equalize", image), np.asarray(ImageOps.equalize(Image.fromarray(image))))


@pytest.mark.parametrize("negate", [False, True])
def test_relative_translation_shifts_by_whole_pixels_and_fills_with_the_mean(negate):
    image = picture(height=20, width=40)
    shifted = run("TranslateXRel", image, 10.0, negate)  # 0.45 * 40 = 18 pixels: bicubic samples land on pixels
    expected = np.empty_like(image)
    expected[:] = FILL
    if negate:  # the output pixel x samples x - 18: the content moves right
        expected[:, 18:] = image[:, :-18]
    else:
        expected[:, :-18] = image[:, 18:]
    np.testing.assert_array_equal(shifted, expected)
    down = run("TranslateYRel", picture(height=40, width=20), 10.0, True)
    np.testing.assert_array_equal(down[18:], picture(height=40, width=20)[:-18])


@pytest.mark.parametrize("interpolation, resample", [("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)])
def test_rotation_and_shear_are_pillows_with_timms_arguments(interpolation, resample):
    image = picture(seed=2)
    source = Image.fromarray(image)
    expected = source.rotate(-27.0, resample=resample, fillcolor=FILL)
    np.testing.assert_array_equal(run("Rotate", image, negate=True, interpolation=interpolation), np.asarray(expected))
    expected = source.transform(source.size, Image.AFFINE, (1, 0, 0, 0.27, 1, 0), resample=resample, fillcolor=FILL)
    np.testing.assert_array_equal(run("ShearY", image, interpolation=interpolation), np.asarray(expected))
    corner = run("ShearX", image, 10.0)[-1, -1]
    assert tuple(corner) == FILL  # a shear of 0.3 brings fill into the bottom-right corner


def test_plan_statistics_follow_the_policy():
    augment = RandAugment(parse_rand_augment("rand-m9-mstd0.5-inc1"), FILL)
    rng = np.random.default_rng(0)
    images = 20000
    steps = [step for _ in range(images) for step in augment.plan(rng)]
    assert len(steps) / images == pytest.approx(1.0, abs=0.02)  # 2 draws x probability 0.5
    counts = np.array([sum(step.name == name for step in steps) for name in RAND_INCREASING_OPERATIONS])
    assert counts.sum() == len(steps) and np.all(np.abs(counts / len(steps) - 1 / 15) < 0.006)  # uniform choice
    magnitudes = np.array([step.magnitude for step in steps])
    assert magnitudes.min() >= 0 and magnitudes.max() <= 10
    assert magnitudes.mean() == pytest.approx(9.0, abs=0.015) and magnitudes.std() == pytest.approx(0.5, abs=0.02)
    assert np.mean([step.negate for step in steps]) == pytest.approx(0.5, abs=0.015)


def test_uniform_magnitude_and_same_plan_for_the_same_seed():
    augment = RandAugment(parse_rand_augment("rand-m6-mstd200-n4-p1.0"))
    steps = [step for _ in range(3000) for step in augment.plan(np.random.default_rng(_))]
    assert len(steps) == 4 * 3000
    magnitudes = np.array([step.magnitude for step in steps])
    assert magnitudes.max() <= 6 and magnitudes.mean() == pytest.approx(3.0, abs=0.1)  # U(0, 6)
    image = picture(seed=3)
    first = augment(image, np.random.default_rng(42))
    assert np.array_equal(first, augment(image, np.random.default_rng(42)))
    assert not np.array_equal(first, augment(image, np.random.default_rng(43)))
    assert augment.apply(image, []) is image


def test_random_interpolation_picks_bilinear_or_bicubic_per_operation():
    augment = RandAugment(parse_rand_augment("rand-m9-p1.0"), FILL, interpolation="random")
    rng = np.random.default_rng(1)
    steps = [step for _ in range(2000) for step in augment.plan(rng)]
    share = np.mean([step.interpolation == "bicubic" for step in steps])
    assert {step.interpolation for step in steps} == {"bilinear", "bicubic"} and share == pytest.approx(0.5, abs=0.03)
    image = picture(seed=4)
    rotate = [step for step in steps if step.name == "Rotate"][0]
    expected = run("Rotate", image, rotate.magnitude, rotate.negate, rotate.interpolation)
    np.testing.assert_array_equal(augment.apply(image, [rotate]), expected)
    with pytest.raises(DropCovError, match="interpolation 'nearest'"):
        RandAugment(parse_rand_augment("rand"), FILL, interpolation="nearest")
