"""The recipe's train pipeline: off by default (today's pipeline exactly), the batch operation's
normalisation, reproducibility under the seed with several workers, other draws on other ranks, and soft
targets when mixing."""
import os

import numpy as np
import pytest
from PIL import Image

from src.data import create_dataset
from src.data.recipe import DEIT_AUGMENT, AugmentSettings, TrainBatchAugment
from src.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from src.errors import DropCovError

CLASSES = 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe_images")
    rng = np.random.default_rng(0)
    for index in range(16):
        os.makedirs(root / "train" / f"c{index % CLASSES}", exist_ok=True)
        pixels = rng.integers(0, 256, (30 + index, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "train" / f"c{index % CLASSES}" / f"{index}.jpg", quality=90)
    return root


def read_all(folder, augment, workers=1, seed=5, shard_id=0, num_shards=1):
    bundle = create_dataset("imagenet", str(folder), "train", batch_size=4, image_size=24, seed=seed,
                            num_parallel_workers=workers, augment=augment, num_classes=CLASSES,
                            num_shards=num_shards, shard_id=shard_id)
    return [(images, labels) for images, labels in
            bundle.dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)]


def test_default_settings_leave_the_pipeline_as_today(folder):
    assert not AugmentSettings().batch_level and AugmentSettings().per_image_options()["normalize"]
    today, default = read_all(folder, None), read_all(folder, AugmentSettings())
    assert len(today) == len(default) == 4
    for (images, labels), (images2, labels2) in zip(today, default):
        assert images.dtype == np.float32 and labels.dtype == np.int32
        np.testing.assert_array_equal(images, images2)
        np.testing.assert_array_equal(labels, labels2)


def test_batch_operation_without_operations_normalises_like_mindspore():
    import mindspore.dataset.vision as vision

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (6, 7, 3), dtype=np.uint8) for _ in range(2)]
    out, labels = TrainBatchAugment(0, 0).apply(images, [np.int32(2), np.int32(0)], rng)
    normalize, to_chw = vision.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)), vision.HWC2CHW()
    for index, image in enumerate(images):
        np.testing.assert_allclose(out[index], to_chw(normalize(image)), rtol=1e-6, atol=1e-6)
    assert labels.tolist() == [2, 0] and labels.dtype == np.int32


def test_deit_recipe_is_reproducible_with_several_workers_and_mixes_labels(folder):
    first = read_all(folder, DEIT_AUGMENT, workers=3)
    second = read_all(folder, DEIT_AUGMENT, workers=3)
    for (images, targets), (images2, targets2) in zip(first, second):
        assert images.shape == (4, 3, 24, 24) and images.dtype == np.float32
        assert targets.shape == (4, CLASSES) and targets.dtype == np.float32
        np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
        assert targets.min() >= 0.1 / CLASSES - 1e-6  # label smoothing folded in
        np.testing.assert_array_equal(images, images2)
        np.testing.assert_array_equal(targets, targets2)
    other_seed = read_all(folder, DEIT_AUGMENT, workers=3, seed=6)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other_seed))


def test_each_batch_and_rank_draws_its_own_numbers():
    augment = TrainBatchAugment(seed=1, shard_id=0)
    draws = {(shard, epoch, batch): TrainBatchAugment(1, shard).generator(epoch, batch).random(4).tobytes()
             for shard in (0, 1) for epoch in (0, 1) for batch in (0, 1)}
    assert len(set(draws.values())) == len(draws)  # all different
    assert augment.generator(1, 0).random(4).tobytes() == draws[(0, 1, 0)]  # and repeatable
    operation = DEIT_AUGMENT.batch_operation(CLASSES, seed=1, shard_id=1)
    images = [np.full((24, 24, 3), value, np.uint8) for value in (10, 200)]
    results = [operation.apply(list(images), [0, 1], operation.generator(0, batch))[0] for batch in (0, 0, 1)]
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], results[2])


def test_colour_jitter_is_left_out_with_randaugment_as_in_timm():
    assert DEIT_AUGMENT.per_image_options() == {"interpolation": "bicubic", "normalize": False, "color_jitter": 0.0}
    assert AugmentSettings(color_jitter=0.4).per_image_options()["color_jitter"] == 0.4
    assert DEIT_AUGMENT.mixing and DEIT_AUGMENT.batch_level


@pytest.mark.parametrize("kwargs, key", [(dict(interpolation="lanczos"), "train_interpolation"),
                                         (dict(auto_augment="rand-q3"), "auto_augment"),
                                         (dict(random_erase_prob=0.5, random_erase_mode="blur"), "random_erase_mode"),
                                         (dict(mixup_alpha=0.2, mixup_mode="rows"), "mixup_mode")])
def test_bad_settings_are_caught_when_the_settings_are_made(kwargs, key):
    with pytest.raises(DropCovError, match=key):
        AugmentSettings(**kwargs)


def test_batch_level_options_on_cifar10_are_refused(tmp_path):
    with pytest.raises(DropCovError, match="image folders"):
        create_dataset("cifar10", str(tmp_path), "train", 4, 32, augment=DEIT_AUGMENT)


def test_mixing_needs_an_even_batch(folder):
    with pytest.raises(DropCovError, match="batch_size must be even, got 3"):
        create_dataset("imagenet", str(folder), "train", batch_size=3, image_size=24, augment=DEIT_AUGMENT)
